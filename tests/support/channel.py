"""A stand-in for the Bot Framework channel side, used by the HTTP tests.

``FakeChannel`` is a tiny aiohttp server that plays the role of the activity's ``serviceUrl``: the bot POSTs its
replies there in the normal delivery mode, exactly as it does to the Emulator. ``Conversation`` sends activities
to the bot over real HTTP the way the Emulator does and returns what came back, in either delivery mode.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

BOT_ID = "bot-1"
MESSAGES_PATH = "/api/messages"


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` (from ``app.create_app``) over real HTTP on 127.0.0.1 and a free port; yields its messages URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{MESSAGES_PATH}"
    finally:
        await runner.cleanup()


class FakeChannel:
    """Records every activity the bot sends to ``/v3/conversations/{id}/activities[/{replyToId}]``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/conversations/{conversation}/activities", self._receive)
        app.router.add_post("/v3/conversations/{conversation}/activities/{reply_to}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.method, request.path, dict(request.headers)))
        self.received.append(body)
        return web.json_response({"id": str(uuid.uuid4())})

    def take(self) -> list[dict[str, Any]]:
        taken, self.received = self.received, []
        return taken


@dataclass
class Reply:
    status: int
    body: Any
    activities: list[dict[str, Any]]

    @property
    def texts(self) -> list[str]:
        return [activity.get("text") or "" for activity in self.activities if activity.get("type") == "message"]

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


_ids = itertools.count(1)


@dataclass
class Conversation:
    """One user talking to the bot in one conversation."""

    session: aiohttp.ClientSession
    bot_url: str
    channel: FakeChannel
    user_id: str = field(default_factory=lambda: f"user-{uuid.uuid4().hex[:8]}")
    conversation_id: str = field(default_factory=lambda: f"conv-{uuid.uuid4().hex[:8]}")
    channel_id: str = "emulator"
    expect_replies: bool = False

    def activity(self, activity_type: str = "message", **fields: Any) -> dict[str, Any]:
        activity: dict[str, Any] = {
            "type": activity_type,
            "id": f"activity-{next(_ids)}",
            "timestamp": datetime.now(UTC).isoformat(),
            "channelId": self.channel_id,
            "serviceUrl": self.channel.url,
            "from": {"id": self.user_id, "name": "User"},
            "recipient": {"id": BOT_ID, "name": "Bot"},
            "conversation": {"id": self.conversation_id},
        }
        if self.expect_replies:
            activity["deliveryMode"] = "expectReplies"
        activity.update(fields)
        return activity

    async def post(self, activity: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
        self.channel.take()
        async with self.session.post(self.bot_url, json=activity, headers=headers) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            status = response.status
        if isinstance(body, dict) and "activities" in body:
            activities = body["activities"]
        else:
            activities = [a for a in self.channel.take() if a.get("conversation", {}).get("id") == self.conversation_id]
        return Reply(status, body, activities)

    async def say(self, text: str | None = None, **fields: Any) -> Reply:
        if text is not None:
            fields["text"] = text
        reply = await self.post(self.activity("message", **fields))
        assert reply.status in (200, 201), (reply.status, reply.body)
        return reply

    async def join(self) -> Reply:
        """A conversationUpdate adding the bot and this user, as the Emulator sends on a new conversation."""
        reply = await self.post(
            self.activity(
                "conversationUpdate",
                membersAdded=[{"id": BOT_ID, "name": "Bot"}, {"id": self.user_id, "name": "User"}],
            )
        )
        assert reply.status in (200, 201), (reply.status, reply.body)
        return reply
