"""Every command at every point of the conversation, and the first minutes of a conversation (TestAdapter).

``STEPS`` is every point where the bot can be waiting for an answer (and "no dialog"); ``EXPECTED`` says what
each command in ``bots.commands.COMMANDS`` does there. A command added to the table without an entry here fails
``test_every_command_in_the_table_is_covered``. The profile's questions come from tests/support/profile.py, so a
question added to the dialog is a step here too; what the bot says is read from the sample's constants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from botbuilder.dialogs import DialogState
from botbuilder.schema import Activity, ChannelAccount, InputHints

from bots.commands import (
    ASK_NAME,
    CANCELLED_TEXT,
    COMMANDS,
    EXPORT_TEXT,
    HELP_TEXT,
    LEAVING_TEXT,
    NOTHING_STORED_TEXT,
    NOTHING_TO_CANCEL_TEXT,
    PENDING_DIALOGS,
)
from bots.commands import NAME_QUESTION as LEAVING_NAME_QUESTION
from dialogs import FORGET_DIALOG, GREET_BACK, NAME_DIALOG, PROFILE_DIALOG
from dialogs.forget_dialog import FORGET_QUESTION, FORGET_RETRY, KEPT_TEXT
from dialogs.name_dialog import CHANGE_NAME_QUESTION, NEW_NAME_QUESTION, RENAMED_TEXT
from dialogs.profile_dialog import CONFIRM_RETRY, WANTS_AGE_RETRY
from hosting.storage import MemoryStateStorage
from tests.support import profile, words
from tests.support.harness import BOT, BotHarness

NAME_QUESTION = "name question"


@dataclass(frozen=True)
class Step:
    """A point in the conversation: how to get there, what the bot asked, what it is waiting for."""

    setup: tuple[str, ...]
    asked: str | None  # a fragment of the pending question, None when nothing is pending
    pending: str | None  # the innermost prompt id on the stored dialog stack, NAME_QUESTION, or None
    leaving: str | None  # how the bot names the pending question when a command interrupts it
    named: bool = True  # whether the user has told the bot their name before


PROFILE = PENDING_DIALOGS[PROFILE_DIALOG]
#: The answers that lead to each of the profile's questions (an age, so that every question is asked).
PROFILE_ANSWERS = {"name": "Grace", "age": "42"}
STEPS = {
    "no dialog": Step((), None, None, None),
    "first name question": Step(("<join>",), ASK_NAME, NAME_QUESTION, LEAVING_NAME_QUESTION, False),
    **{
        f"profile: {question.prompt.removeprefix('profile.')}": Step(
            tuple(map(str, profile.answers(until=question.key, **PROFILE_ANSWERS))),
            question.asks,
            question.prompt,
            PROFILE,
        )
        for question in profile.asked(**PROFILE_ANSWERS)
    },
    "forget: confirm": Step(("forget",), FORGET_QUESTION, "forget.confirm", PENDING_DIALOGS[FORGET_DIALOG]),
    "name: new name": Step(("name",), NEW_NAME_QUESTION, "name.prompt", PENDING_DIALOGS[NAME_DIALOG]),
}


@dataclass(frozen=True)
class Outcome:
    says: Callable[[Step], str | None]  # a fragment of the command's own reply at this step
    pending: Callable[[Step], str | None]  # what the bot waits for afterwards


def _show(step: Step) -> str:
    return "Name: Ada" if step.named else NOTHING_STORED_TEXT


EXPECTED = {
    "help": Outcome(says=lambda step: HELP_TEXT, pending=lambda step: step.pending),
    "show": Outcome(says=_show, pending=lambda step: step.pending),
    "cancel": Outcome(
        says=lambda step: CANCELLED_TEXT if step.pending else NOTHING_TO_CANCEL_TEXT, pending=lambda step: None
    ),
    "profile": Outcome(says=lambda step: profile.asks("transport"), pending=lambda step: "profile.transport"),
    "export": Outcome(says=lambda step: EXPORT_TEXT, pending=lambda step: step.pending),
    "forget": Outcome(says=lambda step: FORGET_QUESTION, pending=lambda step: "forget.confirm"),
    "name": Outcome(says=lambda step: NEW_NAME_QUESTION, pending=lambda step: "name.prompt"),
}
LEAVING = words.template_pattern(LEAVING_TEXT)


async def at(step: Step) -> BotHarness:
    user = BotHarness(MemoryStateStorage())
    if step.named:
        await user.say_all("hi", "Ada")
    for text in step.setup:
        await (user.join() if text == "<join>" else user.say(text))
    return user


async def stored_name(user: BotHarness) -> str | None:
    return ((await user.stored(user.user_key) or {}).get("UserProfile") or {}).get("name")


async def stored_profile(user: BotHarness) -> dict | None:
    return (await user.stored(user.user_key) or {}).get("UserProfile")


async def pending(user: BotHarness) -> str | None:
    """What the stored state says the bot waits for: the innermost prompt's id, the name question, or None."""
    record = await user.stored(user.member_key) or {}
    stack = record.get("DialogState")
    if isinstance(stack, DialogState) and stack.dialog_stack:
        frame = stack.dialog_stack[0]
        while isinstance(frame.state.get("dialogs"), DialogState):
            frame = frame.state["dialogs"].dialog_stack[0]
        return frame.id
    if record.get("MemberData", {}).get("asked_for_name") and not await stored_name(user):
        return NAME_QUESTION
    return None


def test_every_command_in_the_table_is_covered() -> None:
    assert set(EXPECTED) == set(COMMANDS)


def test_the_help_text_lists_every_command_with_its_help() -> None:
    for command in COMMANDS.values():
        assert f"- **{command.name}**: {command.help}" in HELP_TEXT


@pytest.mark.parametrize("step_name", STEPS)
async def test_each_step_is_what_the_table_says(step_name: str) -> None:
    step = STEPS[step_name]
    user = await at(step)

    assert await pending(user) == step.pending


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("step_name", STEPS)
async def test_every_command_at_every_step(step_name: str, command: str) -> None:
    step, outcome = STEPS[step_name], EXPECTED[command]
    user = await at(step)
    profile_before = await stored_profile(user)

    replies = await user.send_text_activity(f" {command.upper()} ")

    texts = [reply.text or "" for reply in replies]
    said = outcome.says(step)
    assert any(said in text for text in texts), texts
    interrupts = COMMANDS[command].in_dialog.name == "INTERRUPT"
    if step.pending and interrupts:
        assert texts[0] == LEAVING_TEXT.format(pending=step.leaving)
    elif step.pending and command in ("help", "show", "export"):
        assert step.asked in texts[-1], "the pending question is asked again"
        assert replies[-1].input_hint == InputHints.expecting_input
    else:
        assert not any(LEAVING.search(text) for text in texts)
    assert await pending(user) == outcome.pending(step)
    assert await stored_profile(user) == profile_before, "no command changes the stored profile by itself"


@pytest.mark.parametrize("step_name", [name for name, step in STEPS.items() if step.pending])
async def test_after_help_the_pending_question_still_takes_its_answer(step_name: str) -> None:
    """Not only asked again: the dialog really is where it was (the next step's question follows)."""
    user = await at(STEPS[step_name])
    await user.say("help")

    after_help = await user.say("no" if "confirm" in step_name else "Zoe")
    fresh = await at(STEPS[step_name])
    without_help = await fresh.say("no" if "confirm" in step_name else "Zoe")

    assert after_help == without_help


async def test_forget_typed_as_the_name_in_the_profile_dialog_is_a_command_not_a_name() -> None:
    user = await at(STEPS["profile: name"])

    assert FORGET_QUESTION in await user.say("forget")
    assert await user.say("no") == KEPT_TEXT
    assert "Name: Ada" in await user.say("show")


# --- greetings --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("greeting", ["hello", "Hi!", "hey", "Good morning.", "HELLO THERE", " hiya ", "hey :)"])
async def test_a_greeting_after_the_welcome_is_greeted_back_and_the_name_asked_again(greeting: str) -> None:
    user = BotHarness(MemoryStateStorage())
    assert (await user.join()).rstrip().endswith(ASK_NAME)

    [reply] = await user.send_text_activity(greeting)

    assert reply.text == f"{GREET_BACK} {ASK_NAME}"
    assert reply.input_hint == InputHints.expecting_input
    assert await stored_name(user) is None
    assert await user.say("Ada") == words.thanks("Ada")


@pytest.mark.parametrize("name", ["Heidi", "Hilda", "Hey Jude", "Morgan"])
async def test_names_that_merely_look_like_greetings_are_names(name: str) -> None:
    user = BotHarness(MemoryStateStorage())
    await user.join()

    assert await user.say(name) == words.thanks(name)


async def test_a_greeting_is_not_taken_as_the_name_in_the_profile_dialog() -> None:
    user = await at(STEPS["profile: name"])

    reply = await user.say("Hello!")

    assert reply.splitlines()[0] == GREET_BACK
    assert profile.asks("name") in reply
    assert await pending(user) == "profile.name"
    assert profile.after("name").asks in await user.say("Grace")


async def test_a_greeting_is_not_taken_as_the_new_name() -> None:
    user = await at(STEPS["name: new name"])

    reply = await user.say("hi")

    assert reply == f"{GREET_BACK}\n{CHANGE_NAME_QUESTION.format(current='Ada')}"
    assert await pending(user) == "name.prompt"


async def test_once_the_bot_knows_the_name_a_greeting_is_an_ordinary_message() -> None:
    user = await at(STEPS["no dialog"])

    words.expect_echo(await user.say("hello"), "hello", "Ada")


# --- the name command ---------------------------------------------------------------------------------------------


async def test_the_name_command_changes_the_name_and_keeps_the_rest_of_the_profile() -> None:
    user = await at(STEPS["no dialog"])
    await user.say_all(*profile.answers(transport="Bus", name="Ada"))

    assert await user.say("name") == CHANGE_NAME_QUESTION.format(current="Ada")
    assert await user.say("  Grace ") == RENAMED_TEXT.format(name="Grace")

    stored = (await user.stored(user.user_key))["UserProfile"]
    assert (stored["name"], stored["transport"]) == ("Grace", "Bus")
    words.expect_echo(await user.say("ping"), "ping", "Grace")


async def test_the_name_command_follows_the_name_rule() -> None:
    user = await at(STEPS["name: new name"])

    assert "at most 50 characters" in await user.say("x" * 51)
    assert await user.say("Zoe") == RENAMED_TEXT.format(name="Zoe")


async def test_the_name_command_answers_the_first_name_question_too() -> None:
    user = await at(STEPS["first name question"])

    await user.say("name")
    assert await user.say("Zoe") == RENAMED_TEXT.format(name="Zoe")
    words.expect_echo(await user.say("ping"), "ping", "Zoe")


# --- yes/no retries and input hints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_name", "retry"),
    [
        ("profile: wants-age", WANTS_AGE_RETRY),
        ("profile: confirm", CONFIRM_RETRY),
        ("forget: confirm", FORGET_RETRY),
    ],
)
async def test_yes_no_questions_say_what_they_need_when_the_answer_is_unclear(step_name: str, retry: str) -> None:
    user = await at(STEPS[step_name])

    [reply] = await user.send_text_activity("maybe")

    assert reply.text == retry
    assert reply.input_hint == InputHints.expecting_input
    assert await pending(user) == STEPS[step_name].pending


async def joining(user: BotHarness) -> list[Activity]:
    """The user joins the conversation; the bot's replies as activities."""
    return await user.send(Activity(type="conversationUpdate", members_added=[BOT, ChannelAccount(id=user.user_id)]))


EXPECTING, ACCEPTING = InputHints.expecting_input, InputHints.accepting_input
# Said at a profile question before its answer: unclear answers (asked again), a command that answers and asks
# again, a greeting where a name is expected (greeted back, asked again).
ASIDES = {
    "transport": [("walk", [EXPECTING])],
    "name": [("help", [ACCEPTING, EXPECTING]), ("hi", [ACCEPTING, EXPECTING])],
    "wants_age": [("maybe", [EXPECTING])],
    "age": [("old", [EXPECTING])],
    "confirm": [("show", [ACCEPTING, EXPECTING])],
}


def _through_the_profile() -> list[tuple[str, list[str]]]:
    """The profile from start to saved, with the asides: each answer is followed by the next question (the last
    question by the summary first), the last answer by "saved" only."""
    given = {"transport": "Car", "name": "Ada", "age": "36"}
    questions = profile.asked(**given)
    turns: list[tuple[str, list[str]]] = []
    for number, message in enumerate(profile.answers(**given)):
        if number:
            turns += ASIDES.get(questions[number - 1].key, [])
        leads_to = questions[number].key if number < len(questions) else None
        hints = [ACCEPTING] if leads_to is None else [EXPECTING]
        turns.append((str(message), [ACCEPTING, EXPECTING] if leads_to == "confirm" else hints))
    return turns


CONVERSATION = [
    ("<join>", [EXPECTING]),  # the welcome ends with "What's your name?"
    ("hello", [EXPECTING]),
    ("", [EXPECTING]),  # "Sorry, I need your name as text. What's your name?"
    ("Ada", [ACCEPTING]),
    ("ping", [ACCEPTING]),
    ("help", [ACCEPTING]),
    *_through_the_profile(),
    ("forget", [EXPECTING]),
    ("name", [ACCEPTING, EXPECTING]),
    ("cancel", [ACCEPTING]),
    ("cancel", [ACCEPTING]),
    ("name", [EXPECTING]),
    ("Grace", [ACCEPTING]),
]


async def test_questions_expect_input_and_everything_else_accepts_it() -> None:
    user = BotHarness(MemoryStateStorage())
    for text, hints in CONVERSATION:
        replies = await (joining(user) if text == "<join>" else user.send_text_activity(text))
        assert [(reply.input_hint, reply.text) for reply in replies] == [
            (hint, reply.text) for hint, reply in zip(hints, replies, strict=False)
        ], text
        assert len(replies) == len(hints), (text, [reply.text for reply in replies])


async def test_a_known_user_is_welcomed_back_without_a_question() -> None:
    user = await at(STEPS["no dialog"])

    [welcome] = await joining(user.elsewhere("conv-2"))

    assert welcome.text == words.welcome_back("Ada")
    assert welcome.input_hint == InputHints.accepting_input
