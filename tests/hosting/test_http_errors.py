"""Bad requests, authentication, failing turns and an unready store, over real HTTP against the real app."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botbuilder.core import BotState, TurnContext

from app import create_app
from config import Settings, load_settings
from hosting import ConversationState, StateStorage, UserState
from hosting.pipeline import BOT_ERROR_TEXT, DAMAGED_TEXT
from hosting.server import RUNTIME
from tests.support import counting_bot
from tests.support.channel import Conversation, FakeChannel, serving


async def post_raw(http: aiohttp.ClientSession, url: str, data: bytes, content_type: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    skip = () if content_type else ("Content-Type",)
    async with http.post(url, data=io.BytesIO(data), headers=headers, skip_auto_headers=skip) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def a_message(channel: FakeChannel, **overrides: Any) -> dict[str, Any]:
    activity = {
        "type": "message",
        "text": "hi",
        "channelId": "emulator",
        "serviceUrl": channel.url,
        "from": {"id": "u1"},
        "recipient": {"id": "bot"},
        "conversation": {"id": "c1"},
    }
    activity.update(overrides)
    return {key: value for key, value in activity.items() if value is not None}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"[]", "application/json", 400, "invalid_activity"),
        (b'"text"', "application/json", 400, "invalid_activity"),
        (b'{"type": "message"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"type": "message"}', None, 415, "unsupported_media_type"),
    ],
)
async def test_malformed_bodies_get_a_4xx_with_a_json_error(
    http: aiohttp.ClientSession, bot_url: str, body: bytes, content_type: str | None, status: int, code: str
) -> None:
    got_status, got = await post_raw(http, bot_url, body, content_type)

    assert got_status == status
    assert got["error"]["code"] == code
    assert "Traceback" not in json.dumps(got)


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"type": None}, "type"),
        ({"conversation": None}, "conversation.id"),
        ({"conversation": {}}, "conversation.id"),
        ({"from": None}, "from.id"),
        ({"channelId": None}, "channelId"),
        ({"serviceUrl": None}, "serviceUrl"),
        ({"recipient": None}, "recipient.id"),
    ],
)
async def test_activities_missing_required_fields_are_refused_by_name(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel, overrides: dict[str, Any], missing: str
) -> None:
    status, body = await post_raw(
        http, bot_url, json.dumps(a_message(channel, **overrides)).encode(), "application/json"
    )

    assert status == 400
    assert missing in body["error"]["message"]
    assert channel.received == []


async def test_a_non_http_service_url_is_refused(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    activity = a_message(channel, serviceUrl="file:///etc/passwd")

    status, body = await post_raw(http, bot_url, json.dumps(activity).encode(), "application/json")

    assert status == 400
    assert "serviceUrl" in body["error"]["message"]


async def test_an_oversized_body_is_413(http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel) -> None:
    activity = a_message(channel, text="x" * (1024 * 1024 + 1))

    status, body = await post_raw(http, bot_url, json.dumps(activity).encode(), "application/json")

    assert status == 413
    assert body["error"]["code"] == "too_large"


async def test_unknown_routes_and_methods_answer_json(http: aiohttp.ClientSession, bot_url: str) -> None:
    async with http.get(bot_url) as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "method_not_allowed"
    async with http.get(bot_url.replace("/api/messages", "/nope")) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


@pytest.fixture
def secured_settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "PORT": "0",
            "SQLITE_PATH": str(tmp_path / "bot.sqlite3"),
            "MicrosoftAppId": "00000000-0000-0000-0000-000000000001",
            "MicrosoftAppPassword": "not-a-real-secret",
        }
    )


@pytest.mark.parametrize("authorization", [None, "Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer a.b.c"])
async def test_with_an_app_id_requests_without_a_valid_token_are_401(
    http: aiohttp.ClientSession, secured_settings: Settings, channel: FakeChannel, authorization: str | None
) -> None:
    """Microsoft's token endpoints are unreachable here, so only tokens refused before any network call are tried."""
    runner = web.AppRunner(await create_app(secured_settings))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/messages"
        headers = {"Authorization": authorization} if authorization else {}
        async with http.post(url, json=a_message(channel), headers=headers) as response:
            status, body = response.status, await response.json()
    finally:
        await runner.cleanup()

    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    assert channel.received == []


async def test_a_damaged_record_is_moved_aside_the_user_is_told_and_the_conversation_goes_on(
    counting_conversation: Conversation, settings: Settings
) -> None:
    """A real failure inside a turn: the user's stored record is not JSON. It is kept, byte for byte, under a
    ``_damaged/`` key; the user hears that their data was damaged and reset, and the turn is answered (by the
    counting bot, tests/support/counting_bot.py: the name is gone, the conversation's count is not)."""
    conversation = counting_conversation
    await conversation.say("hi")
    await conversation.say(counting_bot.call_me("Ada"))
    key = f"emulator/users/{conversation.user_id}"
    with contextlib.closing(sqlite3.connect(settings.store.path)) as db, db:
        db.execute("UPDATE bot_state SET document = '{broken' WHERE key = ?", (key,))

    reply = await conversation.say("hello")

    assert reply.texts == [DAMAGED_TEXT, counting_bot.echo("hello", 3)]
    assert (await conversation.say(counting_bot.call_me("Grace"))).texts == [counting_bot.named("Grace")]
    with contextlib.closing(sqlite3.connect(settings.store.path)) as db:
        kept = db.execute("SELECT key, document FROM bot_state WHERE key LIKE '\\_damaged/%' ESCAPE '\\'").fetchall()
    assert kept == [(f"_damaged/{key}", "{broken")]


async def test_readyz_is_503_with_a_reason_when_the_store_does_not_answer(
    http: aiohttp.ClientSession, settings: Settings
) -> None:
    app = await create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await app[RUNTIME].storage.close()  # the store goes away under a running app

        async with http.get(f"{base}/readyz") as response:
            status, body = response.status, await response.json()
        async with http.get(f"{base}/healthz") as response:
            health = response.status
    finally:
        await runner.cleanup()

    assert status == 503
    assert body["status"] == "unavailable"
    assert body["storage"] == "sqlite"
    assert body["reason"]
    assert health == 200


async def test_a_bug_in_a_turn_is_apologised_for_and_nothing_is_saved(
    http: aiohttp.ClientSession, settings: Settings, channel: FakeChannel
) -> None:
    """The real app and storage with a bot whose echo is broken: the turn fails after changing state in memory
    (and after its reply was sent to the turn). The user gets an apology and nothing else, the Emulator a trace,
    and the stored records stay as the last good turn left them."""

    class BrokenEcho(counting_bot.CountingBot):
        async def on_message_activity(self, turn_context: TurnContext) -> None:
            await super().on_message_activity(turn_context)
            if turn_context.activity.text == "this breaks":
                raise RuntimeError("the echo is broken")

    def broken_bot(storage: StateStorage) -> tuple[BrokenEcho, tuple[BotState, ...]]:
        user_state, conversation_state = UserState(storage), ConversationState(storage)
        return BrokenEcho(user_state, conversation_state), (user_state, conversation_state)

    app = await create_app(settings, bot_factory=broken_bot)
    async with serving(app) as url:
        talk = Conversation(http, url, channel)
        await talk.say("hi")
        await talk.say(counting_bot.call_me("Ada"))

        reply = await talk.say("this breaks")

        assert reply.status == 201
        assert reply.texts == [BOT_ERROR_TEXT]
        assert any(a["type"] == "trace" and "the echo is broken" in a["value"] for a in reply.activities)
        storage = app[RUNTIME].storage
        user = await storage.read([f"emulator/users/{talk.user_id}"])
        conversation = await storage.read([f"emulator/conversations/{talk.conversation_id}"])
        assert next(iter(user.values()))[counting_bot.USER]["name"] == "Ada"
        assert next(iter(conversation.values()))[counting_bot.COUNTER]["count"] == 2
