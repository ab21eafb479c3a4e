"""The conversation: welcome, learn the user's name, echo; commands (``bots.commands``) and their dialogs.

The bot reads and writes only through state property accessors; where the state lives is the storage's
business, and loading and saving are the turn pipeline's (``hosting.pipeline``): the bot never sees a retry.

Whose state is whose:

* ``UserState`` (per user and channel): the profile. Every conversation of the user shares it.
* ``ConversationState`` (per conversation): the message counter, shared by everyone in the conversation.
* ``PrivateConversationState`` (per conversation *and* user): the dialog in progress and whether the bot is
  waiting for this member's name. In a group, one member's answers never land in another member's dialog, and
  one member cannot confirm another's ``forget``.

What is kept about a user across conversations (the index that ``forget`` and ``export`` use) is
``bots.user_data``'s business. A turn whose records were written by a newer version of the bot is refused with
an apology and saves nothing, so such a record is never rewritten down (see README, "Schema versions"). A saved
dialog stack this code cannot resume (``hosting.dialog_stack``) is dropped with an apology before anything runs it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from botbuilder.core import ActivityHandler, BotState, TurnContext
from botbuilder.dialogs import DialogSet, DialogState
from botbuilder.schema import ActivityTypes, ChannelAccount

from data_models import ConversationData, MemberData, UserProfile
from data_models.accessors import (
    CONVERSATION_DATA_PROPERTY,
    DIALOG_STATE_PROPERTY,
    MEMBER_DATA_PROPERTY,
    USER_PROFILE_PROPERTY,
    ModelProperty,
)
from dialogs import (
    GREET_BACK,
    REFUSED_NAME_TEXT,
    ForgetDialog,
    NameDialog,
    ProfileDialog,
    check_name,
    is_greeting,
    plain_text,
    question,
)
from hosting import ConversationState, PrivateConversationState, StateStorage, UserState, hold, unresumable

from .commands import ASK_NAME, HELP_TEXT, CommandTurn, command_of, run_command
from .user_data import Forgotten, RecordReader, UserData

logger = logging.getLogger(__name__)

NEWER_RECORD_TEXT = (
    "Sorry, what I have stored for you here was written by a newer version of me, and this version cannot "
    "safely change it. I've left it exactly as it was; please try again a little later."
)
LOST_TRACK_TEXT = (
    "Sorry, I lost track of the question I was asking you, so I've dropped it; nothing you stored has changed. "
    "Please start again with the command (type 'help' to see them)."
)
# What the bot says, each in one place (tests/support/words.py derives its matchers from these, so rewording one
# fails only the test that pins it: tests/bot/test_wording.py). Fields in braces are filled in with str.format.
WELCOME_TEXT = (
    "Hello and welcome! I'm a bot that remembers you: your name and profile stay with me "
    "across conversations until you tell me to forget them."
)
WELCOME_BACK_TEXT = "Welcome back, {name}! Type 'help' to see what I can do."
STRANGER_TEXT = "Hello! I don't know you yet."
NAME_TAKEN_TEXT = "Thanks, {name}! I'll remember you. Send me anything and I'll echo it; type 'help' for commands."
#: The echo of a message: what was sent, then its number in the conversation, when it was sent and on what channel.
ECHO_TEXT = "{name} sent: {text}\n\nMessage #{number} in this conversation, received {time} on channel '{channel}'."


def received_at(activity_timestamp: datetime | None, local_timestamp: datetime | None) -> datetime:
    """When the message was sent: the channel's local time when it gives one, else its UTC timestamp."""
    if local_timestamp is not None and local_timestamp.tzinfo is not None:
        return local_timestamp
    if activity_timestamp is not None:
        return activity_timestamp if activity_timestamp.tzinfo else activity_timestamp.replace(tzinfo=UTC)
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %:z")


class StateBot(ActivityHandler):
    def __init__(
        self,
        conversation_state: ConversationState,
        user_state: UserState,
        private_state: PrivateConversationState,
        read_records: RecordReader,
    ) -> None:
        """``read_records`` reads records outside the turn (other conversations', damaged copies) for ``forget``
        and ``export``; never for writing."""
        self._conversation_state = conversation_state
        self._user_state = user_state
        self._private_state = private_state
        self._profile = ModelProperty(user_state, USER_PROFILE_PROPERTY, UserProfile)
        self._conversation = ModelProperty(conversation_state, CONVERSATION_DATA_PROPERTY, ConversationData)
        self._member = ModelProperty(private_state, MEMBER_DATA_PROPERTY, MemberData)
        self._user_data = UserData(user_state, conversation_state, private_state, self._profile, read_records)
        self._dialog_state = private_state.create_property(DIALOG_STATE_PROPERTY)
        self._dialogs = DialogSet(self._dialog_state)
        self._dialogs.add(ProfileDialog(self._profile))
        self._dialogs.add(ForgetDialog(self._erase_user))
        self._dialogs.add(NameDialog(self._profile))

    @property
    def states(self) -> tuple[BotState, ...]:
        """Every state the bot uses, in the order a turn writes them where a store cannot write them together.

        The user's record first: it is the one that conversations running in parallel (and unaware of each other)
        can race for, and when that write loses, nothing of the turn has been written yet. Turns of one
        conversation are serialised by the pipeline's locks, so the conversation's records rarely conflict.
        """
        return (self._user_state, self._private_state, self._conversation_state)

    async def on_turn(self, turn_context: TurnContext) -> None:
        """The turn, refused when a record is newer than this code; then the conversation goes in the index."""
        newer = self._user_data.newer_than_code(turn_context)
        if newer:
            hold(turn_context)
            logger.warning("refusing a turn: records newer than this code (%s); nothing saved", ", ".join(newer))
            if turn_context.activity.type == ActivityTypes.message:
                await turn_context.send_activity(NEWER_RECORD_TEXT)
            return
        await super().on_turn(turn_context)
        await self._user_data.remember_conversation(turn_context)

    async def on_members_added_activity(self, members_added: list[ChannelAccount], turn_context: TurnContext) -> None:
        """Welcome each member who joins a one-to-one conversation. In a group (a Teams group chat or team) only
        the bot's own arrival is welcomed, once, to whoever added it: a team of 50 would otherwise get 50 name
        questions."""
        activity = turn_context.activity
        if activity.conversation.is_group:
            if any(member.id == activity.recipient.id for member in members_added):
                await self._welcome(turn_context, activity.from_property)
            return
        for member in members_added:
            if member.id != activity.recipient.id:
                await self._welcome(turn_context, member)

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        """Teams announces the bot added to a personal chat with ``installationUpdate``: welcome the user (in a
        group the bot's arrival in ``membersAdded`` is welcomed instead)."""
        if not turn_context.activity.conversation.is_group:
            await self._welcome(turn_context, turn_context.activity.from_property)

    async def _welcome(self, turn_context: TurnContext, member: ChannelAccount) -> None:
        # UserState is keyed by the activity's sender, so only the sender's profile can be looked up here.
        is_sender = member.id == turn_context.activity.from_property.id
        profile = await self._profile.get(turn_context) if is_sender else UserProfile()
        if profile.name:
            await turn_context.send_activity(plain_text(WELCOME_BACK_TEXT.format(name=profile.name)))
            return
        await turn_context.send_activity(question(f"{WELCOME_TEXT}\n\n{HELP_TEXT}\n\n{ASK_NAME}"))
        if is_sender:
            await self._member.set(turn_context, MemberData(asked_for_name=True))

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        data = await self._conversation.get(turn_context)
        data = replace(data, message_count=data.message_count + 1)
        await self._conversation.set(turn_context, data)

        dropped = await self._drop_unresumable_dialog(turn_context)
        turn = CommandTurn(
            await self._dialogs.create_context(turn_context), self._profile, self._member, self._user_data
        )
        command = command_of(turn_context.activity.text)
        if command is not None:
            await run_command(command, turn)
        elif dropped:
            return  # the message answered the question that was dropped: neither a name nor something to echo
        elif turn.dialogs.active_dialog is not None:
            await turn.dialogs.continue_dialog()
        elif await turn.waiting_for_name():
            await self._take_name(turn_context)
        else:
            await self._converse(turn_context, data)

    async def _drop_unresumable_dialog(self, turn_context: TurnContext) -> bool:
        """Clear a saved dialog stack these dialogs cannot resume (``hosting.dialog_stack``) and apologise; True if so.

        Runs before anything continues, re-prompts, describes or cancels the stack, each of which would raise on it.
        Only the stack goes; the profile, the member's other state and the conversation's are left as they are.
        """
        problem = unresumable(self._dialogs, await self._dialog_state.get(turn_context, DialogState))
        if problem is None:
            return False
        logger.warning("dropping a saved dialog stack this code cannot resume: %s", problem)
        await self._dialog_state.set(turn_context, DialogState())
        await turn_context.send_activity(LOST_TRACK_TEXT)
        return True

    async def _converse(self, turn_context: TurnContext, data: ConversationData) -> None:
        profile = await self._profile.get(turn_context)
        if profile.name:
            await turn_context.send_activity(plain_text(self._echo(turn_context, profile.name, data.message_count)))
            return
        await self._member.set(turn_context, MemberData(asked_for_name=True))
        await turn_context.send_activity(question(f"{STRANGER_TEXT} {ASK_NAME}"))

    async def _take_name(self, turn_context: TurnContext) -> None:
        """The answer to the first-contact question "What's your name?"."""
        text = turn_context.activity.text
        if is_greeting(text):
            await turn_context.send_activity(question(f"{GREET_BACK} {ASK_NAME}"))
            return
        problem = check_name(text)
        if problem:
            await turn_context.send_activity(question(f"{REFUSED_NAME_TEXT.format(problem=problem)} {ASK_NAME}"))
            return
        name = text.strip()
        profile = await self._profile.get(turn_context)
        await self._profile.set(turn_context, replace(profile, name=name))
        await self._member.set(turn_context, MemberData(asked_for_name=False))
        await turn_context.send_activity(plain_text(NAME_TAKEN_TEXT.format(name=name)))

    @staticmethod
    def _echo(turn_context: TurnContext, name: str, number: int) -> str:
        activity = turn_context.activity
        moment = received_at(activity.timestamp, activity.local_timestamp)
        return ECHO_TEXT.format(
            name=name, text=activity.text or "", number=number, time=format_time(moment), channel=activity.channel_id
        )

    async def _erase_user(self, turn_context: TurnContext) -> Forgotten:
        """The "forget" command: everything about the user on this channel goes when the turn is saved.

        Their profile, and their part of every conversation in their index; a one-to-one conversation is the
        user's alone, so its record goes too, while a group's counter stays (``bots.user_data``).
        """
        return await self._user_data.forget(turn_context)


def create_bot(storage: StateStorage) -> tuple[StateBot, tuple[BotState, ...]]:
    """The bot and the states a turn loads and saves for it, all on ``storage`` (``hosting.BotFactory``)."""
    bot = StateBot(ConversationState(storage), UserState(storage), PrivateConversationState(storage), storage)
    return bot, bot.states
