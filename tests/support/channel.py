"""A stand-in for the Bot Framework channel side, used by the HTTP tests.

``FakeChannel`` is a tiny aiohttp server that plays the role of the activity's ``serviceUrl``: the bot POSTs its
replies there in the normal delivery mode, exactly as it does to the Emulator, and updates (PUT), deletes
(DELETE) and creates conversations (``POST /v3/conversations``) as the Bot Connector API defines them. It also
stands in for the Bot Framework token service (``OAuthUrl``; the real one is not reachable from here):
``/api/usertoken/GetToken``, ``/api/botsignin/GetSignInResource`` and ``/api/usertoken/SignOut``.
``Conversation`` sends activities to the bot over real HTTP the way the Emulator does and returns what came back,
in either delivery mode.
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

from hosting.deliveries import SUFFIX
from hosting.state_keys import conversation_key

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
    """Records every activity the bot sends to ``/v3/conversations/{id}/activities[/{replyToId}]``, and every
    other request it makes (see the module docstring).

    ``events`` (shared with a store that records its writes, say) gets one line per request as it arrives:
    ``"channel: POST /v3/..."``. Methods in ``failing`` are answered 502, and so are the next ``fail_next``
    requests, whatever they are (a channel that fails, then recovers). The token service signs users in from
    ``user_tokens`` (``(user id, connection name) -> token``) and ``magic_codes`` (``code -> token``, granted to
    whoever sends the code).
    """

    def __init__(self, events: list[str] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.answered_ids: list[str] = []
        self.updates: list[tuple[str, str, dict[str, Any]]] = []
        self.deletions: list[tuple[str, str]] = []
        self.created: list[dict[str, Any]] = []
        self.events = events if events is not None else []
        self.failing: set[str] = set()
        self.fail_next = 0
        self.user_tokens: dict[tuple[str, str], str] = {}
        self.magic_codes: dict[str, str] = {}
        self.token_calls: list[tuple[str, dict[str, str], str | None]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/conversations", self._create)
        app.router.add_post("/v3/conversations/{conversation}/activities", self._receive)
        app.router.add_post("/v3/conversations/{conversation}/activities/{reply_to}", self._receive)
        app.router.add_put("/v3/conversations/{conversation}/activities/{activity}", self._update)
        app.router.add_delete("/v3/conversations/{conversation}/activities/{activity}", self._delete)
        app.router.add_get("/api/usertoken/GetToken", self._get_token)
        app.router.add_get("/api/botsignin/GetSignInResource", self._sign_in_resource)
        app.router.add_delete("/api/usertoken/SignOut", self._sign_out)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _arrived(self, request: web.Request) -> web.Response | None:
        """Record the request; the 502 answer when its method is failing."""
        self.requests.append((request.method, request.path, dict(request.headers)))
        self.events.append(f"channel: {request.method} {request.path}")
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": {"code": "ServiceError", "message": "failing once"}}, status=500)
        if request.method in self.failing:
            return web.json_response({"error": {"code": "ServiceError", "message": "failing"}}, status=502)
        return None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._arrived(request)
        if refused is not None:
            return refused
        self.received.append(body)
        activity_id = str(uuid.uuid4())
        self.answered_ids.append(activity_id)
        return web.json_response({"id": activity_id})

    async def _update(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._arrived(request)
        if refused is not None:
            return refused
        self.updates.append((request.match_info["conversation"], request.match_info["activity"], body))
        return web.json_response({"id": request.match_info["activity"]})

    async def _delete(self, request: web.Request) -> web.Response:
        refused = self._arrived(request)
        if refused is not None:
            return refused
        self.deletions.append((request.match_info["conversation"], request.match_info["activity"]))
        return web.Response(status=200)

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._arrived(request)
        if refused is not None:
            return refused
        self.created.append(body)
        return web.json_response({"id": f"created-{len(self.created)}", "activityId": f"first-{len(self.created)}"})

    def _token_call(self, request: web.Request) -> dict[str, str]:
        query = dict(request.query)
        self.token_calls.append((request.path, query, request.headers.get("Authorization")))
        return query

    async def _get_token(self, request: web.Request) -> web.Response:
        query = self._token_call(request)
        key = (query.get("userId", ""), query.get("connectionName", ""))
        code = query.get("code")
        if code is not None and code in self.magic_codes:
            self.user_tokens[key] = self.magic_codes.pop(code)
        token = self.user_tokens.get(key)
        if token is None:
            return web.json_response({"error": {"code": "NotFound", "message": "no token"}}, status=404)
        return web.json_response({"channelId": query.get("channelId"), "connectionName": key[1], "token": token})

    async def _sign_in_resource(self, request: web.Request) -> web.Response:
        self._token_call(request)
        return web.json_response({"signInLink": f"{self.url}sign-in/{len(self.token_calls)}"})

    async def _sign_out(self, request: web.Request) -> web.Response:
        query = self._token_call(request)
        self.user_tokens.pop((query.get("userId", ""), query.get("connectionName", "")), None)
        return web.Response(status=200)

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

    @property
    def deliveries_key(self) -> str:
        """The key of this conversation's delivery log (``hosting.deliveries``)."""
        return conversation_key(self.channel_id, self.conversation_id) + SUFFIX

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
