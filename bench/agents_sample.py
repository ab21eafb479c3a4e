"""Comparator: the same state sample as ``bench.official_sample``, ported minimally to the Microsoft 365 Agents SDK.

Runs only in ``bench/.agents-venv`` (microsoft-agents-* 1.9.0, see bench/agents-requirements.txt), which the
benchmark creates; the bot never depends on it. ``AgentApplication`` with ``MemoryStorage``, the SDK's aiohttp
``CloudAdapter`` and its JWT middleware configured for anonymous requests (no app id), as a developer would
run it locally. The SDK answers ``expectReplies`` itself, so nothing in it is patched.

State values are ``StoreItem``s: ``get_value`` hands back a detached copy once a value has been stored, so each
changed value is written back with ``set_value``.

    bench/.agents-venv/bin/python -m bench.agents_sample
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter, jwt_authorization_middleware, start_agent_process
from microsoft_agents.hosting.core import (
    AgentApplication,
    AgentAuthConfiguration,
    ApplicationOptions,
    MemoryStorage,
    StoreItem,
    TurnContext,
    TurnState,
)

from bench.serve import MESSAGES_PATH, run


class Profile(StoreItem):
    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def store_item_to_json(self) -> dict[str, Any]:
        return {"name": self.name}

    @staticmethod
    def from_json_to_store_item(json_data: dict[str, Any]) -> Profile:
        return Profile(json_data.get("name"))


class ConversationFacts(StoreItem):
    def __init__(
        self, asked_for_name: bool = False, messages: int = 0, last_received: str = "", channel_id: str = ""
    ) -> None:
        self.asked_for_name = asked_for_name
        self.messages = messages
        self.last_received = last_received
        self.channel_id = channel_id

    def store_item_to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @staticmethod
    def from_json_to_store_item(json_data: dict[str, Any]) -> ConversationFacts:
        return ConversationFacts(**json_data)


def create_app() -> web.Application:
    # The SDK warns on every turn that an anonymous UserTokenClient has no app id. Writing that line would be
    # charged to the SDK's CPU per turn; silenced, so the comparison is not tilted in our favour.
    logging.getLogger("microsoft_agents.hosting.core.connector.client.user_token_client").setLevel(logging.ERROR)
    anonymous = AgentAuthConfiguration(anonymous_allowed=True)
    connections = MsalConnectionManager(connections_configurations={"SERVICE_CONNECTION": anonymous})
    adapter = CloudAdapter(connection_manager=connections)
    agent = AgentApplication[TurnState](
        ApplicationOptions(storage=MemoryStorage(), adapter=adapter, start_typing_timer=False),
        connection_manager=connections,
    )

    @agent.conversation_update("membersAdded")
    async def welcome(context: TurnContext, state: TurnState) -> None:
        for member in context.activity.members_added or []:
            if member.id != context.activity.recipient.id:
                await context.send_activity("Hi! I keep a little state about you. Say anything to begin.")

    @agent.activity("message")
    async def on_message(context: TurnContext, state: TurnState) -> None:
        profile = state.user.get_value("Profile", Profile, target_cls=Profile)
        facts = state.conversation.get_value("ConversationFacts", ConversationFacts, target_cls=ConversationFacts)
        facts.messages += 1
        if profile.name is None:
            if facts.asked_for_name:
                profile.name = context.activity.text
                facts.asked_for_name = False
                state.user.set_value("Profile", profile)
                await context.send_activity(f"Nice to meet you, {profile.name}. Send me anything now.")
            else:
                facts.asked_for_name = True
                await context.send_activity("Who are you? Tell me your name.")
            state.conversation.set_value("ConversationFacts", facts)
            return
        received = context.activity.timestamp or datetime.now(UTC)
        facts.last_received = received.isoformat()
        facts.channel_id = str(context.activity.channel_id)
        state.conversation.set_value("ConversationFacts", facts)
        await context.send_activity(f"{profile.name} sent: {context.activity.text}")
        await context.send_activity(f"Message {facts.messages}, received {facts.last_received}")
        await context.send_activity(f"Channel: {facts.channel_id}")

    async def messages(request: web.Request) -> web.Response:
        return await start_agent_process(request, agent, adapter)

    app = web.Application(middlewares=[jwt_authorization_middleware])
    app["agent_configuration"] = anonymous
    app.router.add_post(MESSAGES_PATH, messages)
    return app


if __name__ == "__main__":
    run(create_app())
