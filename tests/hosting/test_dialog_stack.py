"""hosting/dialog_stack.py: which saved dialog stacks the registered dialogs can resume, checked before running them.

A stack wrongly called unresumable would end a user's dialog for nothing, so every stack the bot's own dialogs
save along the way is checked too; the commands that continue, re-prompt, describe or cancel a dialog are
driven against an unresumable one.
"""

from __future__ import annotations

from typing import Any

import pytest
from botbuilder.core import ConversationState, MemoryStorage
from botbuilder.dialogs import Dialog, DialogInstance, DialogSet, DialogState, DialogTurnResult
from botbuilder.dialogs.prompts import ActivityPrompt, PromptOptions

from bots import create_bot
from bots.commands import COMMANDS, EXPORT_TEXT, HELP_TEXT, NOTHING_TO_CANCEL_TEXT, STORED_TEXT
from bots.state_bot import LOST_TRACK_TEXT
from dialogs.forget_dialog import FORGET_QUESTION
from dialogs.name_dialog import NEW_NAME_QUESTION
from hosting.dialog_stack import unresumable
from hosting.storage import MemoryStateStorage
from tests.support import profile as profile_dialog
from tests.support.harness import BotHarness


def waterfall(**changes: Any) -> dict[str, Any]:
    return {"options": None, "values": {"draft": {}}, "instanceId": "i-1", "stepIndex": 0, **changes}


def prompt(**changes: Any) -> dict[str, Any]:
    return {"options": PromptOptions(), "state": {}, **changes}


def profile(prompt_state: Any = None, waterfall_state: Any = None, prompt_id: str = "profile.transport") -> Any:
    """The profile dialog (ids as dialogs/profile_dialog.py registers them) waiting in its transport prompt."""
    inner = DialogState(
        [
            DialogInstance(prompt_id, prompt() if prompt_state is None else prompt_state),
            DialogInstance("profile.steps", waterfall() if waterfall_state is None else waterfall_state),
        ]
    )
    return DialogState([DialogInstance("profile", {"dialogs": inner})])


def without(state: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in state.items() if name != key}


RESUMABLE = {
    "no dialog": DialogState(),
    "the profile dialog at its first question": profile(),
    "the profile dialog at its last step": profile(waterfall_state=waterfall(stepIndex=6)),
}

UNRESUMABLE = {
    "a stored null": (None, "NoneType, not a DialogState"),
    "a plain dict": ({"dialogStack": []}, "dict, not a DialogState"),
    "a stack that is not a list": (DialogState("profile"), "str, not a list"),  # type: ignore[arg-type]
    "a frame that is not a DialogInstance": (DialogState([{"id": "profile"}]), "dict, not a DialogInstance"),
    "a frame without an id": (DialogState([DialogInstance("", {})]), "no dialog id"),
    "an unknown dialog": (DialogState([DialogInstance("profile.v0", {})]), "no dialog 'profile.v0'"),
    "a frame whose state is not a dict": (DialogState([DialogInstance("profile", ["x"])]), "list as its state"),
    "a component without its inner stack": (DialogState([DialogInstance("profile", {})]), "'dialogs'"),
    "an unknown inner dialog": (profile(prompt_id="profile.transport.v2"), "no dialog 'profile.transport.v2'"),
    "a top-level dialog inside a component": (profile(prompt_id="name"), "no dialog 'name' is registered inside"),
    "a step index past the steps": (profile(waterfall_state=waterfall(stepIndex=7)), "'stepIndex' is 7"),
    "a negative step index": (profile(waterfall_state=waterfall(stepIndex=-1)), "'stepIndex' is -1"),
    "a step index that is a string": (profile(waterfall_state=waterfall(stepIndex="0")), "'stepIndex' is '0'"),
    "a step index that is a bool": (profile(waterfall_state=waterfall(stepIndex=True)), "'stepIndex' is True"),
    "waterfall values that are not a dict": (profile(waterfall_state=waterfall(values=[])), "'values'"),
    "a waterfall without its instance id": (
        profile(waterfall_state=without(waterfall(), "instanceId")),
        "no 'instanceId'",
    ),
    "a waterfall without its options": (profile(waterfall_state=without(waterfall(), "options")), "no 'options'"),
    "a prompt without options": (profile(prompt_state=without(prompt(), "options")), "'options' is not"),
    "a prompt with plain options": (profile(prompt_state=prompt(options={"prompt": None})), "'options' is not"),
    "a prompt without its state": (profile(prompt_state=without(prompt(), "state")), "'state' is not a dict"),
}


@pytest.fixture(scope="module")
def dialogs() -> DialogSet:
    bot, _ = create_bot(MemoryStateStorage())
    return bot._dialogs


@pytest.mark.parametrize("name", RESUMABLE)
def test_a_stack_the_dialogs_can_resume_passes(dialogs: DialogSet, name: str) -> None:
    assert unresumable(dialogs, RESUMABLE[name]) is None


@pytest.mark.parametrize("name", UNRESUMABLE)
def test_a_stack_the_dialogs_cannot_resume_is_named_with_the_reason(dialogs: DialogSet, name: str) -> None:
    state, reason = UNRESUMABLE[name]

    assert reason in (unresumable(dialogs, state) or "")


class Anything(Dialog):
    """A dialog of a kind the check does not know: only its id is checked."""

    async def begin_dialog(self, dialog_context: Any, options: object = None) -> DialogTurnResult:
        return Dialog.end_of_turn


class Upload(ActivityPrompt):
    def __init__(self) -> None:
        super().__init__("upload", lambda _: True)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (DialogInstance("anything", {"whatever": 1}), None),
        (DialogInstance("upload", {"options": PromptOptions(), "state": {"AttemptCount": 2}}), None),
        (DialogInstance("upload", {"options": PromptOptions(), "state": {}}), "attempt count is None"),
        (DialogInstance("upload", {"options": None, "state": {"AttemptCount": 0}}), "'options' is not"),
    ],
)
def test_other_kinds_of_dialog_are_checked_for_what_the_sdk_reads_of_them(
    frame: DialogInstance, reason: str | None
) -> None:
    dialogs = DialogSet(ConversationState(MemoryStorage()).create_property("dialogs"))
    dialogs.add(Anything("anything"))
    dialogs.add(Upload())

    problem = unresumable(dialogs, DialogState([frame]))

    assert problem is None if reason is None else reason in (problem or "")


async def test_every_stack_the_bots_own_dialogs_save_is_resumable() -> None:
    user = BotHarness(MemoryStateStorage())
    await user.say_all("hi", "Ada")
    answers = [*profile_dialog.answers(transport="Bus", age="36"), "name", "Grace", "forget", "no"]
    checked = 0
    for answer in answers:
        assert LOST_TRACK_TEXT not in await user.say(answer)
        saved = (await user.stored(user.member_key))["DialogState"]
        assert unresumable(user.bot._dialogs, saved) is None, answer
        checked += bool(saved.dialog_stack)
    # Every answer left a dialog waiting but the three that end one: the profile's last, the name, forget's "no".
    assert checked == len(answers) - 3


# What each command answers when nothing is pending (a new command needs its line here).
ANSWERS = {
    "help": HELP_TEXT,
    "profile": profile_dialog.asks("transport"),
    "name": NEW_NAME_QUESTION,
    "show": STORED_TEXT,
    "cancel": NOTHING_TO_CANCEL_TEXT,
    "export": EXPORT_TEXT,
    "forget": FORGET_QUESTION,
}


@pytest.mark.parametrize("command", COMMANDS)
async def test_every_command_works_on_a_stack_that_cannot_be_resumed(command: str) -> None:
    """``help`` and ``show`` re-prompt, ``cancel`` cancels, the others leave the dialog (``CommandTurn``): on a
    foreign stack each of those would raise. The stack is dropped with the apology first, then the command runs
    as if nothing were pending."""
    user = BotHarness(MemoryStateStorage())
    await user.say_all("hi", "Ada")
    record = await user.stored(user.member_key)
    record["DialogState"] = profile(waterfall_state=waterfall(stepIndex=7))
    await user.storage.write({user.member_key: record})

    replies = await user.send_text_activity(command)

    assert [reply.text for reply in replies][:1] == [LOST_TRACK_TEXT]
    assert len(replies) == 2
    assert ANSWERS[command] in replies[1].text
    assert (await user.stored(user.user_key))["UserProfile"]["name"] == "Ada"


async def test_after_the_apology_the_dialog_can_be_started_again() -> None:
    user = BotHarness(MemoryStateStorage())
    await user.say_all("hi", "Ada")
    record = await user.stored(user.member_key)
    record["DialogState"] = DialogState([DialogInstance("profile.v0", {})])
    await user.storage.write({user.member_key: record})

    assert await user.say("Bus") == LOST_TRACK_TEXT
    assert profile_dialog.asks("transport") in await user.say("profile")
    assert profile_dialog.asks("name") in await user.say("Bus")
