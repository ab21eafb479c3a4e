"""Baseline: the behaviour of Microsoft's "45.state-management" Python sample, written here from its description.

A stock ``ActivityHandler`` with ``UserState`` and ``ConversationState`` on botbuilder's ``MemoryStorage`` behind
the stock ``CloudAdapter``. It welcomes a new member, asks for the user's name, remembers it, and then echoes
each message with a per-conversation counter and the time it was received.

The only change to the SDK is the one without which the benchmark cannot run at all: botbuilder-integration-
aiohttp 4.17.1 answers every ``expectReplies`` request with 500 because it serializes the reply list twice, so
``_process_turn_results`` hands back the ``ExpectedReplies`` model and lets ``process`` serialize it once.
Nothing else is sped up (in particular, the per-turn connector clients stay as the SDK builds them).

    python -m bench.official_sample        # prints "listening on http://127.0.0.1:<port>/api/messages"
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from types import SimpleNamespace

from aiohttp import web
from botbuilder.core import (
    ActivityHandler,
    ConversationState,
    InvokeResponse,
    MemoryStorage,
    TurnContext,
    UserState,
)
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import ChannelAccount, DeliveryModes, ExpectedReplies

from bench.serve import MESSAGES_PATH, run


class Profile:
    """What the sample keeps about a user."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name


class ConversationFacts:
    """What the sample keeps about a conversation."""

    def __init__(self) -> None:
        self.asked_for_name = False
        self.messages = 0
        self.last_received = ""
        self.channel_id = ""


class SampleStateBot(ActivityHandler):
    def __init__(self, conversation_state: ConversationState, user_state: UserState) -> None:
        self.conversation_state = conversation_state
        self.user_state = user_state
        self.profile_property = user_state.create_property("Profile")
        self.facts_property = conversation_state.create_property("ConversationFacts")

    async def on_turn(self, turn_context: TurnContext) -> None:
        await super().on_turn(turn_context)
        await self.conversation_state.save_changes(turn_context)
        await self.user_state.save_changes(turn_context)

    async def on_members_added_activity(self, members_added: list[ChannelAccount], turn_context: TurnContext) -> None:
        for member in members_added:
            if member.id != turn_context.activity.recipient.id:
                await turn_context.send_activity("Hi! I keep a little state about you. Say anything to begin.")

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        profile: Profile = await self.profile_property.get(turn_context, Profile)
        facts: ConversationFacts = await self.facts_property.get(turn_context, ConversationFacts)
        facts.messages += 1
        if profile.name is None:
            if facts.asked_for_name:
                profile.name = turn_context.activity.text
                facts.asked_for_name = False
                await turn_context.send_activity(f"Nice to meet you, {profile.name}. Send me anything now.")
            else:
                facts.asked_for_name = True
                await turn_context.send_activity("Who are you? Tell me your name.")
            return
        received = turn_context.activity.timestamp or datetime.now(UTC)
        facts.last_received = received.isoformat()
        facts.channel_id = turn_context.activity.channel_id
        await turn_context.send_activity(f"{profile.name} sent: {turn_context.activity.text}")
        await turn_context.send_activity(f"Message {facts.messages}, received {facts.last_received}")
        await turn_context.send_activity(f"Channel: {facts.channel_id}")


class ExpectRepliesFixedAdapter(CloudAdapter):
    """The stock adapter, except that an expectReplies result is returned as a model, serialized once."""

    def _process_turn_results(self, context: TurnContext) -> InvokeResponse:
        if context.activity.delivery_mode == DeliveryModes.expect_replies:
            return InvokeResponse(
                status=HTTPStatus.OK, body=ExpectedReplies(activities=context.buffered_reply_activities)
            )
        return super()._process_turn_results(context)


def create_app() -> web.Application:
    storage = MemoryStorage()
    bot = SampleStateBot(ConversationState(storage), UserState(storage))
    authentication = ConfigurationBotFrameworkAuthentication(
        SimpleNamespace(APP_ID="", APP_PASSWORD="", APP_TYPE="MultiTenant", APP_TENANTID="")
    )
    adapter = ExpectRepliesFixedAdapter(authentication)

    async def messages(request: web.Request) -> web.Response:
        return await adapter.process(request, bot)

    app = web.Application()
    app.router.add_post(MESSAGES_PATH, messages)
    return app


if __name__ == "__main__":
    run(create_app())
