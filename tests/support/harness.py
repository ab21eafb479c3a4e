"""Drive the real ``StateBot`` in-process through botbuilder's ``TestAdapter``.

No HTTP here: this is for the conversation logic and the dialogs. Errors are not caught (the TestAdapter has no
turn error handler), so a bug fails the test loudly.
"""

from __future__ import annotations

from typing import Any

from botbuilder.core import TurnContext
from botbuilder.core.adapters import TestAdapter
from botbuilder.schema import Activity, ActivityTypes, Attachment, ChannelAccount, ConversationAccount

from bots import create_bot
from hosting.states import TurnStates
from hosting.storage import StateStorage

BOT = ChannelAccount(id="bot", name="Bot")


class BotHarness:
    """One user in one conversation with a bot whose state lives in ``storage``."""

    def __init__(
        self,
        storage: StateStorage,
        user_id: str = "user-1",
        conversation_id: str = "conv-1",
        channel_id: str = "test",
        *,
        group: bool = False,
    ) -> None:
        self.storage = storage
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.channel_id = channel_id
        self.bot, states = create_bot(storage)
        self.states = TurnStates(storage, states)
        self.adapter = TestAdapter(
            self._turn,
            Activity(
                channel_id=channel_id,
                service_url="https://channel.invalid",
                from_property=ChannelAccount(id=user_id, name="User"),
                recipient=BOT,
                conversation=ConversationAccount(id=conversation_id, is_group=group or None),
            ),
        )

    async def _turn(self, turn_context: TurnContext) -> None:
        """What the turn pipeline does around the bot, minus locks and retries: load, run, save."""
        await self.states.load(turn_context)
        await self.bot.on_turn(turn_context)
        await self.states.save(turn_context)

    def elsewhere(self, conversation_id: str, user_id: str | None = None, channel_id: str | None = None) -> BotHarness:
        """The same storage, seen from another conversation (of the same user unless told otherwise)."""
        return BotHarness(self.storage, user_id or self.user_id, conversation_id, channel_id or self.channel_id)

    def member(self, user_id: str) -> BotHarness:
        """Another member of this (group) conversation, on the same storage."""
        group = bool(self.adapter.template.conversation.is_group)
        return BotHarness(self.storage, user_id, self.conversation_id, self.channel_id, group=group)

    async def send(self, activity: Activity) -> list[Activity]:
        self.adapter.activity_buffer.clear()
        await self.adapter.receive_activity(activity)
        return list(self.adapter.activity_buffer)

    async def say(self, text: str | None = None, **fields: Any) -> str:
        """Send a message; return the text of every reply, one per line block."""
        replies = await self.send(Activity(type=ActivityTypes.message, text=text, **fields))
        return "\n".join(reply.text or "" for reply in replies if reply.type == ActivityTypes.message)

    async def say_all(self, *messages: str | Attachment) -> str:
        """Send several messages in a row (an attachment as a message that carries it, as a channel sends an upload);
        return the replies to the last one."""
        reply = ""
        for message in messages:
            reply = await (self.say(message) if isinstance(message, str) else self.say(attachments=[message]))
        return reply

    async def send_text_activity(self, text: str) -> list[Activity]:
        """Send a message; return the message replies as activities (to look at attachments or suggestions)."""
        replies = await self.send(Activity(type=ActivityTypes.message, text=text))
        return [reply for reply in replies if reply.type == ActivityTypes.message]

    async def join(self) -> str:
        replies = await self.send(
            Activity(
                type=ActivityTypes.conversation_update,
                members_added=[BOT, ChannelAccount(id=self.user_id, name="User")],
            )
        )
        return "\n".join(reply.text or "" for reply in replies)

    async def stored(self, key: str) -> dict[str, Any] | None:
        return (await self.storage.read([key])).get(key)

    @property
    def user_key(self) -> str:
        return f"{self.channel_id}/users/{self.user_id}"

    @property
    def member_key(self) -> str:
        """The PrivateConversationState record: this user in this conversation."""
        return f"{self.channel_id}/conversations/{self.conversation_id}/users/{self.user_id}/"

    @property
    def conversation_key(self) -> str:
        return f"{self.channel_id}/conversations/{self.conversation_id}"
