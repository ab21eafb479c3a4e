"""Every command the bot understands, in one table: name, help text, handler, and what it does mid-question.

A command is a whole message (any case, surrounding spaces ignored) and works at every point of the conversation.
When the bot is waiting for an answer (a dialog's prompt, or the first-contact name question), the command's
``in_dialog`` says what happens to that question:

* ``ANSWER``: the handler answers, then the pending question is asked again (``help``, ``show``);
* ``CANCEL``: the pending question is dropped (``cancel``); the handler runs only when nothing is pending;
* ``INTERRUPT``: the bot says it leaves the pending question, drops it, then runs the handler, which starts a
  question of its own (``profile``, ``forget``, ``name``).

Adding a command is one ``Command`` in ``COMMANDS`` (its handler next to it) plus its tests; the help text, the
welcome and the mid-question behaviour follow from the entry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.dialogs import DialogContext
from botbuilder.schema import Attachment

from data_models import MemberData, UserProfile
from data_models.accessors import ModelProperty
from dialogs import (
    FORGET_DIALOG,
    NAME_DIALOG,
    PROFILE_DIALOG,
    describe_profile,
    picture_attachment,
    plain_text,
    question,
)

if TYPE_CHECKING:
    from .user_data import UserData

ASK_NAME = "What's your name?"
EXPORT_FILE_NAME = "my-data.json"
EXPORT_TEXT = "Here is everything I have stored about you, as a file."
NAME_QUESTION = "the question about your name"
NOTHING_STORED_TEXT = "I don't have anything stored about you yet. Try 'profile'."
STORED_TEXT = "This is what I have stored about you:"
NOTHING_TO_CANCEL_TEXT = "There is nothing to cancel."
CANCELLED_TEXT = "Cancelled. Nothing you stored before has changed."
#: Said when a command interrupts a question (``pending``: how ``PENDING_DIALOGS`` names it).
LEAVING_TEXT = "OK, leaving {pending}; nothing you stored before has changed."
# What each dialog is waiting for, as the bot names it when a command interrupts it.
PENDING_DIALOGS = {
    PROFILE_DIALOG: "the profile questions",
    FORGET_DIALOG: "the question about forgetting you",
    NAME_DIALOG: NAME_QUESTION,
}


@dataclass(frozen=True, slots=True)
class CommandTurn:
    """One member's turn as a command sees it: the dialogs, the profile, and the first-contact name question.

    ``dialogs`` holds a stack these dialogs can resume: the bot drops one it cannot (``hosting.unresumable``) before
    building the turn, so continuing, re-prompting, describing or cancelling it never meets a foreign stack.
    """

    dialogs: DialogContext
    profile: ModelProperty[UserProfile]
    member: ModelProperty[MemberData]
    user_data: UserData

    @property
    def context(self) -> TurnContext:
        return self.dialogs.context

    async def pending(self) -> str | None:
        """The question the bot is waiting for this member to answer, in words; None when it waits for nothing."""
        active = self.dialogs.active_dialog
        if active is not None:
            return PENDING_DIALOGS.get(active.id, "the question in progress")
        if await self.waiting_for_name():
            return NAME_QUESTION
        return None

    async def waiting_for_name(self) -> bool:
        """Whether the next message is taken as the member's first name (asked, and no name stored yet)."""
        if not (await self.member.get(self.context)).asked_for_name:
            return False
        return not (await self.profile.get(self.context)).name

    async def ask_again(self) -> None:
        if self.dialogs.active_dialog is not None:
            await self.dialogs.reprompt_dialog()
        else:
            await self.context.send_activity(question(ASK_NAME))

    async def drop_pending(self) -> None:
        await self.dialogs.cancel_all_dialogs()
        if (await self.member.get(self.context)).asked_for_name:
            await self.member.set(self.context, MemberData(asked_for_name=False))


Handler = Callable[[CommandTurn], Awaitable[None]]


class InDialog(Enum):
    """What a command does to the question the bot is waiting for (see the module docstring)."""

    ANSWER = "answers, then asks the pending question again"
    CANCEL = "drops the pending question"
    INTERRUPT = "leaves the pending question, saying so, and starts its own"


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    run: Handler
    in_dialog: InDialog


async def _help(turn: CommandTurn) -> None:
    await turn.context.send_activity(HELP_TEXT)


async def _profile(turn: CommandTurn) -> None:
    await turn.dialogs.begin_dialog(PROFILE_DIALOG)


async def _name(turn: CommandTurn) -> None:
    await turn.dialogs.begin_dialog(NAME_DIALOG)


async def _show(turn: CommandTurn) -> None:
    profile = await turn.profile.get(turn.context)
    if profile.is_empty:
        await turn.context.send_activity(NOTHING_STORED_TEXT)
        return
    reply = plain_text(f"{STORED_TEXT}\n\n{describe_profile(profile)}")
    if profile.picture:
        reply.attachments = [picture_attachment(profile.picture)]
    await turn.context.send_activity(reply)


async def _cancel(turn: CommandTurn) -> None:
    await turn.context.send_activity(NOTHING_TO_CANCEL_TEXT)


async def _export(turn: CommandTurn) -> None:
    exported = await turn.user_data.export(turn.context)
    encoded = base64.b64encode(json.dumps(exported, indent=2, ensure_ascii=False).encode()).decode("ascii")
    attachment = Attachment(
        content_type="application/json",
        content_url=f"data:application/json;base64,{encoded}",
        name=EXPORT_FILE_NAME,
    )
    conversations = len(exported["conversations"])
    omitted = sum(1 for item in exported["conversations"] if "omitted" in item)
    text = f"{EXPORT_TEXT} It lists {conversations} conversation{'' if conversations == 1 else 's'}."
    if omitted:
        text += f" {omitted} of them are listed without their content: the file would have been too large."
    await turn.context.send_activity(MessageFactory.attachment(attachment, text))


async def _forget(turn: CommandTurn) -> None:
    await turn.dialogs.begin_dialog(FORGET_DIALOG)


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("help", "show this list", _help, InDialog.ANSWER),
        Command("profile", "fill in your profile (transport, name, age, picture)", _profile, InDialog.INTERRUPT),
        Command("name", "change the name I call you", _name, InDialog.INTERRUPT),
        Command("show", "show what I have stored about you", _show, InDialog.ANSWER),
        Command("cancel", "stop the question we are in the middle of", _cancel, InDialog.CANCEL),
        Command("export", "send you everything I have stored about you, as a file", _export, InDialog.ANSWER),
        Command("forget", "delete everything I know about you", _forget, InDialog.INTERRUPT),
    )
}
HELP_TEXT = "Here is what I understand:\n\n" + "\n".join(
    f"- **{command.name}**: {command.help}" for command in COMMANDS.values()
)


def command_of(text: str | None) -> Command | None:
    """The command a message is, if it is exactly one (case and surrounding spaces ignored)."""
    return COMMANDS.get((text or "").strip().lower())


async def run_command(command: Command, turn: CommandTurn) -> None:
    """Run ``command`` at whatever point the conversation is."""
    pending = await turn.pending()
    if pending is None:
        await command.run(turn)
    elif command.in_dialog is InDialog.ANSWER:
        await command.run(turn)
        await turn.ask_again()
    elif command.in_dialog is InDialog.CANCEL:
        await turn.drop_pending()
        await turn.context.send_activity(CANCELLED_TEXT)
    else:
        await turn.drop_pending()
        await turn.context.send_activity(LEAVING_TEXT.format(pending=pending))
        await command.run(turn)
