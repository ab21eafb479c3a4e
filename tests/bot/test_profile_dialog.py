"""The profile dialog, step by step, through the TestAdapter (state in memory unless a test says otherwise).

The dialog is walked through tests/support/profile.py (its questions in order, from the dialog's own texts), so
a test names only the answers that matter to it, and a new question is walked by every test without changing it.
"""

from __future__ import annotations

import pytest
from botbuilder.schema import Attachment

from bots.commands import CANCELLED_TEXT
from data_models import Picture
from dialogs.profile_dialog import (
    AGE_RETRY,
    DISCARDED_TEXT,
    KEEP_NAME_QUESTION,
    PICTURE_REFUSED_TEXT,
    PICTURE_RETRY,
    SAVED_TEXT,
    SKIP,
    TRANSPORT_RETRY,
)
from hosting.storage import MemoryStateStorage
from tests.support import profile, words
from tests.support.harness import BotHarness

PNG = Attachment(content_type="image/png", content_url="https://files.invalid/me.png", name="me.png")


@pytest.fixture
async def user() -> BotHarness:
    harness = BotHarness(MemoryStateStorage())
    await harness.say("hi")
    await harness.say("Ada")
    return harness


async def fill_until_confirm(user: BotHarness, *, age: str | None = "42", picture: bool = True) -> str:
    """Transport Bus, name Grace, ``age`` (None: declined) and the picture (or skip), each answer followed by the
    next question; the reply that asks to confirm (the summary first)."""
    given: dict[str, object] = {"transport": "Bus", "name": "Grace", "picture": PNG if picture else SKIP}
    if age is not None:
        given["age"] = age
    reply = ""
    for answer, question in zip(profile.answers(until="confirm", **given), profile.asked(**given), strict=True):
        reply = await user.say_all(answer)
        assert question.asks in reply, (question.key, reply)
    return reply


async def and_on_to_the_summary(user: BotHarness, reply: str, answered: str) -> str:
    """After the answer to the question ``answered`` (whose reply was ``reply``): the default answers to the next
    questions, up to the summary; the reply that holds it."""
    for answer in profile.answers(since=answered, until="confirm"):
        reply = await user.say_all(answer)
    return reply


async def test_the_whole_profile_is_stored_only_after_the_final_yes(user: BotHarness) -> None:
    summary = await fill_until_confirm(user)

    assert "Name: Grace" in summary
    assert "Transport: Bus" in summary
    assert "Age: 42" in summary
    assert "Picture: me.png" in summary
    assert profile.asks("confirm") in summary

    stored_before = (await user.stored(user.user_key))["UserProfile"]
    assert stored_before["name"] == "Ada"
    assert stored_before["transport"] is None


async def test_yes_saves_every_answer(user: BotHarness) -> None:
    await fill_until_confirm(user)

    assert await user.say("yes") == SAVED_TEXT

    shown = await user.say("show")
    assert "Name: Grace" in shown
    assert "Transport: Bus" in shown
    assert "Age: 42" in shown
    assert "Picture: me.png" in shown
    stored = (await user.stored(user.user_key))["UserProfile"]
    assert stored["picture"] == {"content_type": "image/png", "url": "https://files.invalid/me.png", "name": "me.png"}
    words.expect_echo(await user.say("hello"), "hello", "Grace")


async def test_show_sends_the_stored_picture_back(user: BotHarness) -> None:
    await fill_until_confirm(user)
    await user.say("yes")

    replies = await user.send_text_activity("show")

    [reply] = replies
    assert [(a.content_type, a.content_url) for a in reply.attachments] == [("image/png", PNG.content_url)]


async def test_no_discards_every_answer(user: BotHarness) -> None:
    await fill_until_confirm(user)

    assert await user.say("no") == DISCARDED_TEXT

    shown = await user.say("show")
    assert "Name: Ada" in shown
    assert "Transport: (not given)" in shown
    assert "Age: (not given)" in shown
    words.expect_echo(await user.say("hello"), "hello", "Ada")


async def test_age_and_picture_can_be_left_out(user: BotHarness) -> None:
    summary = await fill_until_confirm(user, age=None, picture=False)

    assert "Age: (not given)" in summary
    assert "Picture: (none)" in summary
    await user.say("yes")
    stored = (await user.stored(user.user_key))["UserProfile"]
    assert stored["age"] is None
    assert stored["picture"] is None
    assert stored["transport"] == "Bus"


@pytest.mark.parametrize("bad_age", ["abc", "0", "150", "3.5", "-4", "1000"])
async def test_an_invalid_age_gets_a_retry_prompt_saying_what_is_valid(user: BotHarness, bad_age: str) -> None:
    await user.say_all(*profile.answers(until="age", age=bad_age))

    retry = await user.say(bad_age)

    assert AGE_RETRY in retry
    assert "whole number from 1 to 149" in retry
    assert profile.after("age", age="149").asks in await user.say("149")


@pytest.mark.parametrize("good_age", ["1", "149", "I am 37"])
async def test_whole_ages_from_1_to_149_are_accepted(user: BotHarness, good_age: str) -> None:
    await user.say_all(*profile.answers(until="age", age=good_age))

    assert profile.after("age", age=good_age).asks in await user.say(good_age)


async def test_transport_must_be_one_of_the_choices(user: BotHarness) -> None:
    await user.say(profile.START)

    assert TRANSPORT_RETRY in await user.say("Rocket")
    assert "Car, Bus, Bicycle" in TRANSPORT_RETRY
    assert profile.after("transport").asks in await user.say("bicycle")


async def test_the_known_name_is_offered_as_a_suggestion(user: BotHarness) -> None:
    await user.say(profile.START)

    [reply] = await user.send_text_activity("Car")

    assert reply.text == KEEP_NAME_QUESTION.format(current="Ada")
    assert [action.value for action in reply.suggested_actions.actions] == ["Ada"]


@pytest.mark.parametrize("answer", ["keep", "Keep it.", "yes", "OK", "same"])
async def test_an_answer_that_means_keep_keeps_the_stored_name(user: BotHarness, answer: str) -> None:
    *answers, confirmation = profile.answers(name=answer)
    await user.say_all(*answers)

    assert await user.say(confirmation) == SAVED_TEXT
    assert "Name: Ada" in await user.say("show")


async def test_without_a_stored_name_keep_is_just_a_name() -> None:
    stranger = BotHarness(MemoryStateStorage())
    await stranger.say_all(*profile.answers(name="Keep"))

    assert "Name: Keep" in await stranger.say("show")


async def test_a_name_in_the_dialog_follows_the_name_rule(user: BotHarness) -> None:
    await user.say_all(*profile.answers(until="name"))

    assert "at most 50 characters" in await user.say("z" * 51)
    assert profile.after("name").asks in await user.say("  Zed  ")


async def test_a_picture_must_be_jpeg_or_png(user: BotHarness) -> None:
    await user.say_all(*profile.answers(until="picture"))

    text_file = Attachment(content_type="text/plain", content_url="https://files.invalid/a.txt", name="a.txt")
    assert await user.say(attachments=[text_file]) == PICTURE_RETRY
    assert await user.say("here you go") == PICTURE_RETRY
    jpeg = Attachment(content_type="image/jpeg", content_url="https://files.invalid/a.jpg", name="a.jpg")
    summary = await and_on_to_the_summary(user, await user.say(attachments=[jpeg]), "picture")
    assert "Picture: a.jpg" in summary


UP_TO_CONFIRM = profile.answers(until="confirm", transport="Bicycle", name="Zed", age="30")


@pytest.mark.parametrize("steps_before_cancel", range(len(UP_TO_CONFIRM)))
async def test_cancel_at_any_step_leaves_the_stored_profile_untouched(
    user: BotHarness, steps_before_cancel: int
) -> None:
    await user.say_all(*UP_TO_CONFIRM[: steps_before_cancel + 1])
    before = (await user.stored(user.user_key))["UserProfile"]

    assert await user.say("CANCEL") == CANCELLED_TEXT

    assert (await user.stored(user.user_key))["UserProfile"] == before
    words.expect_echo(await user.say("hello"), "hello", "Ada")


async def test_help_during_the_dialog_shows_help_and_asks_the_same_question_again(user: BotHarness) -> None:
    await user.say_all(*profile.answers(until="name"))

    reply = await user.say("help")

    assert "**profile**" in reply
    assert profile.asks("name") in reply
    assert profile.after("name").asks in await user.say("Ada")


async def test_the_dialog_resumes_from_storage_with_a_new_bot(user: BotHarness) -> None:
    """A new StateBot on the same storage is what a restarted process is; the next answer continues."""
    await user.say_all(*profile.answers(until="name"))

    restarted = user.elsewhere(user.conversation_id)

    assert profile.after("name").asks in await restarted.say("Ada")
    assert profile.after("wants_age", wants_age="yes").asks in await restarted.say("yes")


SMALL_PNG = "data:image/png;base64,iVBORw0KGgo="
REFUSED_PICTURES = {
    "an http link off this machine": ("image/png", "http://pictures.invalid/a.png", "must be an https:// address"),
    "a javascript link": ("image/png", "javascript:alert(1)", "must be an https:// address"),
    "a link longer than 2048 characters": ("image/png", "https://p.invalid/" + "a" * 2048, "longer than 2048"),
    "an upload over 48 KB": ("image/png", "data:image/png;base64," + "A" * 70_000, "at most 48 KB"),
    "data of another type": ("image/png", "data:text/html;base64,PHNjcmlwdD4=", "not a base64 JPEG or PNG"),
    "data of the other image type": ("image/png", "data:image/jpeg;base64,/9j/", "not a base64 JPEG or PNG"),
}


@pytest.mark.parametrize("picture", REFUSED_PICTURES.values(), ids=REFUSED_PICTURES.keys())
async def test_a_picture_the_profile_cannot_keep_is_refused_with_the_reason(
    user: BotHarness, picture: tuple[str, str, str]
) -> None:
    content_type, url, reason = picture
    await user.say_all(*profile.answers(until="picture"))

    reply = await user.say(attachments=[Attachment(content_type=content_type, content_url=url, name="p")])

    assert words.template_pattern(PICTURE_REFUSED_TEXT).fullmatch(reply), reply
    assert reason in reply
    kept = await user.say(attachments=[Attachment(content_type="image/png", content_url=SMALL_PNG, name="p")])
    assert "Picture: p" in await and_on_to_the_summary(user, kept, "picture")


@pytest.mark.parametrize("url", ["https://files.invalid/me.png", SMALL_PNG, "http://127.0.0.1:8080/upload/1"])
def test_a_keepable_picture_survives_a_round_trip_and_a_stored_unkeepable_one_reads_as_none(url: str) -> None:
    picture = Picture("image/png", url, "me.png")

    assert Picture.from_dict(picture.to_dict()) == picture
    assert Picture.from_dict({**picture.to_dict(), "url": "https://p.invalid/" + "a" * 5000}) is None
    assert Picture.from_dict({**picture.to_dict(), "name": "n" * 500}) == Picture("image/png", url, None)
