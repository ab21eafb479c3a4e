"""The conversation: welcome, learn the user's name, echo; commands (``bots.commands``) and their dialogs.

The bot reads and writes only through state property accessors; where the state lives is the storage's
business, and loading and saving are the turn pipeline's (``bots.pipeline``): the bot never sees a retry.

Whose state is whose:

* ``UserState`` (per user and channel): the profile. Every conversation of the user shares it.
* ``ConversationState`` (per conversation): the message counter, shared by everyone in the conversation.
* ``PrivateConversationState`` (per conversation *and* user): the dialog in progress and whether the bot is
  waiting for this member's name. In a group, one member's answers never land in another member's dialog, and
  one member cannot confirm another's ``forget``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from botbuilder.core import (
    ActivityHandler,
    BotState,
    ConversationState,
    PrivateConversationState,
    TurnContext,
    UserState,
)
from botbuilder.dialogs import DialogSet
from botbuilder.schema import ChannelAccount

from data_models import ConversationData, MemberData, UserProfile
from data_models.accessors import (
    CONVERSATION_DATA_PROPERTY,
    DIALOG_STATE_PROPERTY,
    MEMBER_DATA_PROPERTY,
    USER_PROFILE_PROPERTY,
    ModelProperty,
)
from dialogs import GREET_BACK, ForgetDialog, NameDialog, ProfileDialog, check_name, is_greeting, question
from storage import StateStorage

from .commands import ASK_NAME, HELP_TEXT, CommandTurn, command_of, run_command
from .pipeline import TurnConversationState, TurnPrivateConversationState, TurnStates, TurnUserState, erase

logger = logging.getLogger(__name__)


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
    ) -> None:
        self._conversation_state = conversation_state
        self._user_state = user_state
        self._private_state = private_state
        self._profile = ModelProperty(user_state, USER_PROFILE_PROPERTY, UserProfile)
        self._conversation = ModelProperty(conversation_state, CONVERSATION_DATA_PROPERTY, ConversationData)
        self._member = ModelProperty(private_state, MEMBER_DATA_PROPERTY, MemberData)
        self._dialogs = DialogSet(private_state.create_property(DIALOG_STATE_PROPERTY))
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

    async def on_members_added_activity(self, members_added: list[ChannelAccount], turn_context: TurnContext) -> None:
        for member in members_added:
            if member.id == turn_context.activity.recipient.id:
                continue
            # UserState is keyed by the activity's sender, so only the sender's profile can be looked up here.
            profile = UserProfile()
            if member.id == turn_context.activity.from_property.id:
                profile = await self._profile.get(turn_context)
            if profile.name:
                await turn_context.send_activity(f"Welcome back, {profile.name}! Type 'help' to see what I can do.")
                continue
            await turn_context.send_activity(
                question(
                    "Hello and welcome! I'm a bot that remembers you: your name and profile stay with me "
                    "across conversations until you tell me to forget them.\n\n" + HELP_TEXT + "\n\n" + ASK_NAME
                )
            )
            if member.id == turn_context.activity.from_property.id:
                await self._member.set(turn_context, MemberData(asked_for_name=True))

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        data = await self._conversation.get(turn_context)
        data = replace(data, message_count=data.message_count + 1)
        await self._conversation.set(turn_context, data)

        turn = CommandTurn(await self._dialogs.create_context(turn_context), self._profile, self._member)
        command = command_of(turn_context.activity.text)
        if command is not None:
            await run_command(command, turn)
        elif turn.dialogs.active_dialog is not None:
            await turn.dialogs.continue_dialog()
        elif await turn.waiting_for_name():
            await self._take_name(turn_context)
        else:
            await self._converse(turn_context, data)

    async def _converse(self, turn_context: TurnContext, data: ConversationData) -> None:
        profile = await self._profile.get(turn_context)
        if profile.name:
            await turn_context.send_activity(self._echo(turn_context, profile.name, data.message_count))
            return
        await self._member.set(turn_context, MemberData(asked_for_name=True))
        await turn_context.send_activity(question(f"Hello! I don't know you yet. {ASK_NAME}"))

    async def _take_name(self, turn_context: TurnContext) -> None:
        """The answer to the first-contact question "What's your name?"."""
        text = turn_context.activity.text
        if is_greeting(text):
            await turn_context.send_activity(question(f"{GREET_BACK} {ASK_NAME}"))
            return
        problem = check_name(text)
        if problem:
            await turn_context.send_activity(question(f"Sorry, {problem}. {ASK_NAME}"))
            return
        name = text.strip()
        profile = await self._profile.get(turn_context)
        await self._profile.set(turn_context, replace(profile, name=name))
        await self._member.set(turn_context, MemberData(asked_for_name=False))
        await turn_context.send_activity(
            f"Thanks, {name}! I'll remember you. Send me anything and I'll echo it; type 'help' for commands."
        )

    @staticmethod
    def _echo(turn_context: TurnContext, name: str, number: int) -> str:
        activity = turn_context.activity
        moment = received_at(activity.timestamp, activity.local_timestamp)
        return (
            f"{name} sent: {activity.text or ''}\n\n"
            f"Message #{number} in this conversation, received {format_time(moment)} "
            f"on channel '{activity.channel_id}'."
        )

    async def _erase_user(self, turn_context: TurnContext) -> None:
        """The "forget" command: the user's profile and their part of this conversation go when the turn is saved.

        A one-to-one conversation is the user's alone, so its record goes too; a group's counter stays.
        """
        erase(turn_context, self._user_state)
        erase(turn_context, self._private_state)
        if not turn_context.activity.conversation.is_group:
            erase(turn_context, self._conversation_state)
        logger.debug("erasing the stored state of a user on channel %s", turn_context.activity.channel_id)


def create_bot(storage: StateStorage) -> tuple[StateBot, TurnStates]:
    """The bot and the states a turn loads and saves for it, all on ``storage``."""
    bot = StateBot(TurnConversationState(storage), TurnUserState(storage), TurnPrivateConversationState(storage))
    return bot, TurnStates(storage, bot.states)
