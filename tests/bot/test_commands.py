"""Every command at every point of the conversation, and the first minutes of a conversation (TestAdapter).

``STEPS`` is every point where the bot can be waiting for an answer (and "no dialog"); ``EXPECTED`` says what
each command in ``bots.commands.COMMANDS`` does there. A command added to the table without an entry here fails
``test_every_command_in_the_table_is_covered``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from botbuilder.dialogs import DialogState
from botbuilder.schema import Activity, ChannelAccount, InputHints

from bots.commands import COMMANDS, HELP_TEXT
from hosting.storage import MemoryStateStorage
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


PROFILE = "the profile questions"
STEPS = {
    "no dialog": Step((), None, None, None),
    "first name question": Step(("<join>",), "What's your name?", NAME_QUESTION, "the question about your name", False),
    "profile: transport": Step(("profile",), "get around", "profile.transport", PROFILE),
    "profile: name": Step(("profile", "Car"), "What name should I store?", "profile.name", PROFILE),
    "profile: wants-age": Step(("profile", "Car", "Grace"), "tell me your age", "profile.wants-age", PROFILE),
    "profile: age": Step(("profile", "Car", "Grace", "yes"), "How old are you?", "profile.age", PROFILE),
    "profile: picture": Step(("profile", "Car", "Grace", "yes", "42"), "JPEG or PNG", "profile.picture", PROFILE),
    "profile: confirm": Step(
        ("profile", "Car", "Grace", "yes", "42", "skip"), "save this profile", "profile.confirm", PROFILE
    ),
    "forget: confirm": Step(("forget",), "Are you sure?", "forget.confirm", "the question about forgetting you"),
    "name: new name": Step(("name",), "What should I call you?", "name.prompt", "the question about your name"),
}


@dataclass(frozen=True)
class Outcome:
    says: Callable[[Step], str | None]  # a fragment of the command's own reply at this step
    pending: Callable[[Step], str | None]  # what the bot waits for afterwards


def _show(step: Step) -> str:
    return "Name: Ada" if step.named else "don't have anything stored"


EXPECTED = {
    "help": Outcome(says=lambda step: HELP_TEXT, pending=lambda step: step.pending),
    "show": Outcome(says=_show, pending=lambda step: step.pending),
    "cancel": Outcome(
        says=lambda step: "Cancelled" if step.pending else "nothing to cancel", pending=lambda step: None
    ),
    "profile": Outcome(says=lambda step: "How do you usually get around?", pending=lambda step: "profile.transport"),
    "export": Outcome(says=lambda step: "everything I have stored about you", pending=lambda step: step.pending),
    "forget": Outcome(says=lambda step: "Are you sure?", pending=lambda step: "forget.confirm"),
    "name": Outcome(says=lambda step: "What should I call you?", pending=lambda step: "name.prompt"),
}


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
        assert texts[0] == f"OK, leaving {step.leaving}; nothing you stored before has changed."
    elif step.pending and command in ("help", "show", "export"):
        assert step.asked in texts[-1], "the pending question is asked again"
        assert replies[-1].input_hint == InputHints.expecting_input
    else:
        assert not any("leaving" in text for text in texts)
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

    assert "Are you sure?" in await user.say("forget")
    assert "haven't deleted anything" in await user.say("no")
    assert "Name: Ada" in await user.say("show")


# --- greetings --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("greeting", ["hello", "Hi!", "hey", "Good morning.", "HELLO THERE", " hiya ", "hey :)"])
async def test_a_greeting_after_the_welcome_is_greeted_back_and_the_name_asked_again(greeting: str) -> None:
    user = BotHarness(MemoryStateStorage())
    assert (await user.join()).rstrip().endswith("What's your name?")

    [reply] = await user.send_text_activity(greeting)

    assert reply.text == "Hello to you too! What's your name?"
    assert reply.input_hint == InputHints.expecting_input
    assert await stored_name(user) is None
    assert "Thanks, Ada!" in await user.say("Ada")


@pytest.mark.parametrize("name", ["Heidi", "Hilda", "Hey Jude", "Morgan"])
async def test_names_that_merely_look_like_greetings_are_names(name: str) -> None:
    user = BotHarness(MemoryStateStorage())
    await user.join()

    assert f"Thanks, {name}!" in await user.say(name)


async def test_a_greeting_is_not_taken_as_the_name_in_the_profile_dialog() -> None:
    user = await at(STEPS["profile: name"])

    reply = await user.say("Hello!")

    assert reply.splitlines()[0] == "Hello to you too!"
    assert "What name should I store?" in reply
    assert await pending(user) == "profile.name"
    assert "tell me your age" in await user.say("Grace")


async def test_a_greeting_is_not_taken_as_the_new_name() -> None:
    user = await at(STEPS["name: new name"])

    reply = await user.say("hi")

    assert "Hello to you too!" in reply
    assert "What should I call you?" in reply
    assert await pending(user) == "name.prompt"


async def test_once_the_bot_knows_the_name_a_greeting_is_an_ordinary_message() -> None:
    user = await at(STEPS["no dialog"])

    assert (await user.say("hello")).startswith("Ada sent: hello")


# --- the name command ---------------------------------------------------------------------------------------------


async def test_the_name_command_changes_the_name_and_keeps_the_rest_of_the_profile() -> None:
    user = await at(STEPS["no dialog"])
    await user.say_all("profile", "Bus", "Ada", "no", "skip", "yes")

    assert "What should I call you? (Now: Ada.)" in await user.say("name")
    assert "Thanks, Grace! I'll call you that from now on." in await user.say("  Grace ")

    profile = (await user.stored(user.user_key))["UserProfile"]
    assert (profile["name"], profile["transport"]) == ("Grace", "Bus")
    assert (await user.say("ping")).startswith("Grace sent: ping")


async def test_the_name_command_follows_the_name_rule() -> None:
    user = await at(STEPS["name: new name"])

    assert "at most 50 characters" in await user.say("x" * 51)
    assert "Thanks, Zoe!" in await user.say("Zoe")


async def test_the_name_command_answers_the_first_name_question_too() -> None:
    user = await at(STEPS["first name question"])

    await user.say("name")
    assert "Thanks, Zoe! I'll call you that from now on." in await user.say("Zoe")
    assert (await user.say("ping")).startswith("Zoe sent: ping")


# --- yes/no retries and input hints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_name", "retry"),
    [
        ("profile: wants-age", "Please answer yes or no: would you like to tell me your age?"),
        ("profile: confirm", "Please answer yes or no: shall I save this profile?"),
        ("forget: confirm", "Please answer yes or no: shall I forget everything about you?"),
    ],
)
async def test_yes_no_questions_say_what_they_need_when_the_answer_is_unclear(step_name: str, retry: str) -> None:
    user = await at(STEPS[step_name])

    [reply] = await user.send_text_activity("maybe")

    assert reply.text.startswith(retry)
    assert reply.input_hint == InputHints.expecting_input
    assert await pending(user) == STEPS[step_name].pending


async def joining(user: BotHarness) -> list[Activity]:
    """The user joins the conversation; the bot's replies as activities."""
    return await user.send(Activity(type="conversationUpdate", members_added=[BOT, ChannelAccount(id=user.user_id)]))


EXPECTING, ACCEPTING = InputHints.expecting_input, InputHints.accepting_input
CONVERSATION = [
    ("<join>", [EXPECTING]),  # the welcome ends with "What's your name?"
    ("hello", [EXPECTING]),
    ("", [EXPECTING]),  # "Sorry, I need your name as text. What's your name?"
    ("Ada", [ACCEPTING]),
    ("ping", [ACCEPTING]),
    ("help", [ACCEPTING]),
    ("profile", [EXPECTING]),
    ("walk", [EXPECTING]),  # retry
    ("Car", [EXPECTING]),
    ("help", [ACCEPTING, EXPECTING]),
    ("hi", [ACCEPTING, EXPECTING]),
    ("Ada", [EXPECTING]),
    ("maybe", [EXPECTING]),
    ("yes", [EXPECTING]),
    ("old", [EXPECTING]),
    ("36", [EXPECTING]),
    ("skip", [ACCEPTING, EXPECTING]),  # the summary, then "Shall I save this profile?"
    ("show", [ACCEPTING, EXPECTING]),
    ("yes", [ACCEPTING]),
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

    assert welcome.text.startswith("Welcome back, Ada!")
    assert welcome.input_hint == InputHints.accepting_input
