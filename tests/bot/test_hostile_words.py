"""What a user types cannot stall the bot, trick ``forget`` into deleting, or render as markup.

Driven in-process through the TestAdapter (tests/support/harness.py) on memory storage; the HTTP path is the same bot.
"""

from __future__ import annotations

import pytest
import recognizers_choice
import recognizers_number
from botbuilder.dialogs.choices import ChoiceRecognizers
from botbuilder.schema import Activity, ChannelAccount

from dialogs.forget_dialog import (
    CLEAR_YES,
    FORGET_QUESTION,
    FORGET_RETRY,
    FORGOTTEN_TEXT,
    KEPT_TEXT,
    NO_BUTTON,
    UNCLEAR_ANSWERS,
    UNCLEAR_TEXT,
    YES_BUTTON,
)
from dialogs.name_dialog import NEW_NAME_QUESTION
from dialogs.profile_dialog import AGE_RETRY, SAVED_TEXT
from dialogs.prompts import MAX_ANSWER_CHARS, TOO_LONG_TEXT, find_choice, normalized
from hosting.storage import MemoryStateStorage
from tests.support import profile, words
from tests.support.harness import BOT, BotHarness

FORGOTTEN = words.template_pattern(FORGOTTEN_TEXT)
TOO_LONG = words.template_pattern(TOO_LONG_TEXT)


@pytest.fixture
async def ada() -> BotHarness:
    user = BotHarness(MemoryStateStorage())
    await user.say_all("hi", "Ada")
    return user


# -- recognition is bounded and linear ---------------------------------------------------------------------------


@pytest.fixture
def no_recognizers_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's recognizers-text functions fail the test if any turn calls them (their cost is quadratic)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("recognizers-text was called during a turn")

    monkeypatch.setattr(recognizers_choice, "recognize_boolean", refuse)
    monkeypatch.setattr(recognizers_number, "recognize_number", refuse)
    monkeypatch.setattr(ChoiceRecognizers, "recognize_choices", refuse)
    monkeypatch.setattr(ChoiceRecognizers, "recognize_number", refuse, raising=False)


@pytest.mark.usefixtures("no_recognizers_text")
async def test_a_whole_profile_and_forget_run_without_the_quadratic_recognizers(ada: BotHarness) -> None:
    *answers, confirmation = profile.answers(transport="by bus", age="I'm 42")
    await ada.say_all(*answers)
    assert await ada.say(confirmation) == SAVED_TEXT
    assert "Transport: Bus" in await ada.say("show")

    await ada.say("forget")
    assert FORGOTTEN.fullmatch(await ada.say("Yes!"))


# Every prompt of the sample that reads text: the messages that lead to it, and a text it shows when it asks again.
# (The picture question takes an attachment, or the one word "skip", which it compares without recognizing it.)
PROMPTS = {
    **{
        f"profile: {question.key}": (profile.answers(until=question.key, age="1"), question.asks)
        for question in profile.asked(age="1")
        if question.key != "picture"
    },
    "forget": (["forget"], FORGET_QUESTION),
    "name command": (["name"], NEW_NAME_QUESTION),
}


@pytest.mark.parametrize("answer", ["y " * 6000, "1 " * 6000, "yes " + "x" * MAX_ANSWER_CHARS])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
async def test_an_answer_longer_than_the_bound_is_not_read_and_the_question_is_asked_again(
    ada: BotHarness, prompt: str, answer: str
) -> None:
    leading, question = PROMPTS[prompt]
    await ada.say_all(*leading)
    before = await ada.stored(ada.user_key)

    reply = await ada.say(answer)

    assert TOO_LONG_TEXT.format(length=len(answer), limit=MAX_ANSWER_CHARS) in reply
    assert question in reply
    stored = await ada.stored(ada.user_key)
    assert stored is not None
    assert {k: v for k, v in stored.items() if k != "e_tag"} == {k: v for k, v in before.items() if k != "e_tag"}


async def test_an_answer_at_the_bound_is_read(ada: BotHarness) -> None:
    await ada.say("forget")

    reply = await ada.say("no" + " " * (MAX_ANSWER_CHARS - 2))

    assert not TOO_LONG.search(reply)
    assert reply == KEPT_TEXT


# -- forget needs one clear yes ----------------------------------------------------------------------------------

UNCLEAR = [
    "not sure",
    "yes no",
    "cancel that, yes",
    "don't, yes I mean no",
    "1 2",
    "1",
    "the first one",
    "true",
    "ok",
    "y",
    "sure",
    "yes!? no",
    "yesss",
    "",
]


@pytest.mark.parametrize("answer", UNCLEAR)
async def test_an_unclear_answer_to_forget_never_deletes_and_asks_again(ada: BotHarness, answer: str) -> None:
    await ada.say("forget")

    reply = await ada.say(answer)

    assert not FORGOTTEN.search(reply)
    assert FORGET_RETRY in reply
    assert (await ada.stored(ada.user_key))["UserProfile"]["name"] == "Ada"


async def test_unclear_answers_end_the_question_as_a_no_after_a_few(ada: BotHarness) -> None:
    await ada.say("forget")
    for _ in range(UNCLEAR_ANSWERS - 1):
        assert FORGET_RETRY in await ada.say("maybe")

    assert UNCLEAR_TEXT in await ada.say("maybe")

    assert (await ada.stored(ada.user_key))["UserProfile"]["name"] == "Ada"
    words.expect_echo(await ada.say("hello"), "hello", "Ada")


@pytest.mark.parametrize("answer", ["yes", "Yes.", "  YES!  ", YES_BUTTON, "yes, delete everything"])
async def test_a_clear_yes_deletes(ada: BotHarness, answer: str) -> None:
    assert normalized(answer) in CLEAR_YES
    await ada.say("forget")

    assert FORGOTTEN.fullmatch(await ada.say(answer))

    assert await ada.stored(ada.user_key) is None


@pytest.mark.parametrize("answer", ["no", "No!", NO_BUTTON, "don't", "keep it"])
async def test_a_clear_no_keeps_everything(ada: BotHarness, answer: str) -> None:
    await ada.say("forget")

    assert await ada.say(answer) == KEPT_TEXT

    assert (await ada.stored(ada.user_key))["UserProfile"]["name"] == "Ada"


async def test_the_forget_question_offers_its_two_clear_answers_as_buttons(ada: BotHarness) -> None:
    [question] = await ada.send_text_activity("forget")

    assert [action.value for action in question.suggested_actions.actions] == [YES_BUTTON, NO_BUTTON]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("Bus", "Bus"), ("by bus", "Bus"), ("the BICYCLE please", "Bicycle"), ("2", "Bus"), ("3", "Bicycle")],
)
def test_a_choice_is_the_one_option_an_answer_names(answer: str, expected: str) -> None:
    from botbuilder.dialogs.choices import Choice

    found = find_choice(answer, [Choice("Car"), Choice("Bus"), Choice("Bicycle")])

    assert found is not None
    assert found.value == expected


@pytest.mark.parametrize("answer", ["car or bus", "rocket", "4", "0", "bus bus car", "bicycles"])
def test_an_answer_naming_no_option_or_two_is_no_choice(answer: str) -> None:
    from botbuilder.dialogs.choices import Choice

    assert find_choice(answer, [Choice("Car"), Choice("Bus"), Choice("Bicycle")]) is None


@pytest.mark.parametrize("answer", ["1 2", "42.5", "forty-two", "", "12 and 13"])
async def test_an_age_answer_must_hold_exactly_one_whole_number(ada: BotHarness, answer: str) -> None:
    await ada.say_all(*profile.answers(until="age", age="1"))

    assert AGE_RETRY in await ada.say(answer)


# -- names refuse what would display as something else ------------------------------------------------------------

INVISIBLE = {
    "a line break": "Ada\nLovelace",
    "a tab": "Ada\tLovelace",
    "a right-to-left override": "Ada\u202egpj.exe",
    "a zero-width space": "A\u200bda",
    "a zero-width joiner": "Ad\u200da",
    "a byte-order mark": "\ufeffAda",
    "a left-to-right isolate": "Ada\u2066x\u2069",
    "a paragraph separator": "Ada\u2029Lovelace",
    "a bell": "Ada\x07",
}


@pytest.mark.parametrize("name", INVISIBLE.values(), ids=INVISIBLE.keys())
async def test_a_name_with_control_or_invisible_characters_is_refused_everywhere(name: str) -> None:
    stranger = BotHarness(MemoryStateStorage())
    await stranger.say("hi")
    assert "can't contain control or invisible characters" in await stranger.say(name)

    await stranger.say("Ada")
    assert "can't contain control or invisible characters" in await stranger.say_all("name", name)
    await stranger.say_all(*profile.answers(until="name"))
    assert "can't contain control or invisible characters" in await stranger.say(name)

    assert (await stranger.stored(stranger.user_key))["UserProfile"]["name"] == "Ada"


# -- the user's words are never rendered as markup ----------------------------------------------------------------

MARKUP_NAMES = ['<img src="http://127.0.0.1:9/x.png">', "![](http://127.0.0.1:9/p.png)", "<h1>Ada</h1>"]


@pytest.mark.parametrize("name", MARKUP_NAMES)
async def test_every_reply_that_repeats_the_users_words_is_plain_text(name: str) -> None:
    """Walks every place the bot repeats a name or a message: each such reply has ``textFormat: plain``."""
    user = BotHarness(MemoryStateStorage())
    echoed = "**bold** [link](http://127.0.0.1:9/) <button>press</button>"
    replies = []
    for text in ("hi", name, echoed, "show", "name", name, *profile.answers(), "show"):
        replies += await user.send_text_activity(text)
    replies += await user.elsewhere("conv-2").send_text_activity("hello")
    elsewhere = user.elsewhere("conv-3")
    replies += await elsewhere.send(
        Activity(type="conversationUpdate", members_added=[BOT, ChannelAccount(id=elsewhere.user_id)])
    )

    repeating = [reply for reply in replies if name in (reply.text or "") or echoed in (reply.text or "")]
    # thanks, echo, show, name question (Now: ...), thanks, keep question, summary, show, echo, welcome back
    assert len(repeating) >= 10
    assert all(reply.text_format == "plain" for reply in repeating), [
        (reply.text, reply.text_format) for reply in repeating if reply.text_format != "plain"
    ]
