"""The local Direct Line 3.0 endpoint over real HTTP, without a browser.

The chat app (``create_app`` plus the Direct Line routes) is served on 127.0.0.1 and a free port; each request
is what DirectLineJS sends, and the bot's replies come back through its ConnectorClient to the endpoint's own
``/v3/conversations/...`` routes, exactly as in ``make chat``.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from app import create_app
from chat import ChatError, DirectLine, create_chat_app, local_settings
from chat.directline import MAX_UPLOAD_BYTES, TOKEN_SECONDS
from config import Settings, load_settings
from data_models import Picture, UserProfile
from dialogs import describe_profile
from tests.support import profile, words
from tests.support.processes import ROOT, bot_environment, free_port

WEBCHAT_STAND_IN = "/* stand-in for webchat.js */"


class FakeClock:
    """Token expiry is measured on this clock instead of the machine's."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ChatServer:
    origin: str
    directline: DirectLine
    clock: FakeClock


@pytest_asyncio.fixture
async def serve_chat(settings: Settings, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start the chat app on a socket bound to 127.0.0.1:0; ``await serve_chat(page_size=...)``."""
    runners: list[web.AppRunner] = []
    webchat_js = tmp_path / "webchat.js"
    webchat_js.write_text(WEBCHAT_STAND_IN)

    async def start(bot_origin: str | None = None, **options: Any) -> ChatServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
        clock = FakeClock()
        directline = DirectLine(bot_origin or origin, clock=clock, **options)
        runner = web.AppRunner(await create_chat_app(settings, directline, webchat_js), access_log=None)
        runners.append(runner)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return ChatServer(origin, directline, clock)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest_asyncio.fixture
async def server(serve_chat: Callable[..., Any]) -> ChatServer:
    return await serve_chat()


class Client:
    """What DirectLineJS does, one request at a time."""

    def __init__(self, http: aiohttp.ClientSession, origin: str) -> None:
        self.http = http
        self.base = f"{origin}/v3/directline"
        self.token = ""
        self.conversation_id = ""
        self.watermark = 0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def start(self, user_id: str = "user-1") -> dict[str, Any]:
        async with self.http.post(f"{self.base}/tokens/generate") as response:
            assert response.status == 200
            generated = await response.json()
        self.token = generated["token"]
        async with self.http.post(f"{self.base}/conversations", json={"user": {"id": user_id}}, headers=self.auth) as r:
            assert r.status == 201, await r.text()
            started = await r.json()
        self.conversation_id = started["conversationId"]
        assert self.conversation_id == generated["conversationId"]
        return started

    async def send(self, text: str, user_id: str = "user-1") -> str:
        activity = {"type": "message", "text": text, "from": {"id": user_id}}
        async with self.http.post(self.activities_url, json=activity, headers=self.auth) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["id"]

    @property
    def activities_url(self) -> str:
        return f"{self.base}/conversations/{self.conversation_id}/activities"

    async def page(self, watermark: int | str | None = None) -> tuple[int, dict[str, Any]]:
        query = "" if watermark is None else f"?watermark={watermark}"
        async with self.http.get(self.activities_url + query, headers=self.auth) as response:
            return response.status, await response.json()

    async def new_activities(self) -> list[dict[str, Any]]:
        """Everything after our watermark, all pages."""
        found: list[dict[str, Any]] = []
        while True:
            status, body = await self.page(self.watermark)
            assert status == 200, body
            found += body["activities"]
            if int(body["watermark"]) == self.watermark:
                return found
            self.watermark = int(body["watermark"])

    async def bot_texts(self) -> list[str]:
        return [a.get("text") or "" for a in await self.new_activities() if a["from"].get("role") == "bot"]


def upload_form(activity: dict[str, Any], *files: tuple[str, str, bytes]) -> aiohttp.FormData:
    """The multipart body DirectLineJS posts to ``/upload``: the activity, then one ``file`` part per file."""
    form = aiohttp.FormData()
    form.add_field("activity", json.dumps(activity), content_type="application/vnd.microsoft.activity")
    for name, content_type, data in files:
        form.add_field("file", io.BytesIO(data), filename=name, content_type=content_type)
    return form


@pytest.fixture
def client(http: aiohttp.ClientSession, server: ChatServer) -> Client:
    return Client(http, server.origin)


async def test_starting_a_conversation_sends_one_conversation_update_and_the_welcome_arrives(client: Client):
    started = await client.start("ada-1")

    activities = await client.new_activities()
    update, welcome = activities
    assert update["type"] == "conversationUpdate"
    assert [member["id"] for member in update["membersAdded"]] == ["state-bot", "ada-1"]
    assert welcome["type"] == "message"
    assert words.is_welcome(welcome["text"])
    assert welcome["from"]["id"] == "state-bot"
    assert welcome["recipient"]["id"] == "ada-1"
    for number, activity in enumerate(activities, start=1):
        assert activity["id"] == f"{started['conversationId']}|{number:07d}"
        assert activity["channelId"] == "directline"
        assert activity["conversation"]["id"] == started["conversationId"]
        assert datetime.fromisoformat(activity["timestamp"]).tzinfo is not None
    assert started["expires_in"] == TOKEN_SECONDS


async def test_starting_again_or_reconnecting_sends_no_second_conversation_update(client: Client, http):
    await client.start("ada-4")
    assert len(await client.new_activities()) == 2

    async with http.post(f"{client.base}/conversations", json={"user": {"id": "ada-4"}}, headers=client.auth) as r:
        assert r.status == 200
        assert (await r.json())["conversationId"] == client.conversation_id
    async with http.get(f"{client.base}/conversations/{client.conversation_id}", headers=client.auth) as r:
        assert r.status == 200
        assert (await r.json())["conversationId"] == client.conversation_id

    assert await client.new_activities() == []


async def test_messages_are_forwarded_to_the_bot_and_replies_come_back_in_order(client: Client):
    await client.start("ada-2")
    await client.new_activities()

    sent_id = await client.send("Ada", user_id="ada-2")
    assert sent_id == f"{client.conversation_id}|0000003"
    echoed, thanks = await client.new_activities()
    assert (echoed["id"], echoed["text"], echoed["from"]["role"]) == (sent_id, "Ada", "user")
    # botbuilder leaves replyToId out on the directline channel (as on Azure), so the reply comes to .../activities.
    assert "replyToId" not in thanks
    assert thanks["text"] == words.thanks("Ada")

    await client.send("hello", user_id="ada-2")
    (echo,) = await client.bot_texts()
    read = words.expect_echo(echo, "hello", "Ada")
    assert (read.number, read.channel) == (2, "directline")


async def test_the_watermark_pages_through_the_conversation(serve_chat: Callable[..., Any], http):
    server = await serve_chat(page_size=2)
    client = Client(http, server.origin)
    await client.start()
    await client.send("Ada")
    await client.send("one")
    # conversationUpdate, welcome, Ada, thanks, one, echo: six activities in pages of two.

    pages = []
    watermark = 0
    while True:
        status, body = await client.page(watermark)
        assert status == 200
        if not body["activities"]:
            assert body["watermark"] == str(watermark)
            break
        pages.append([activity["id"].split("|")[1] for activity in body["activities"]])
        watermark = int(body["watermark"])

    assert pages == [["0000001", "0000002"], ["0000003", "0000004"], ["0000005", "0000006"]]
    status, body = await client.page(4)
    assert body["activities"][0]["text"] == "one"
    assert (await client.page())[1]["activities"][0]["type"] == "conversationUpdate"


@pytest.mark.parametrize("watermark", ["-1", "abc", "99"])
async def test_a_bad_watermark_is_a_400(client: Client, watermark: str):
    await client.start()

    status, body = await client.page(watermark)

    assert status == 400
    assert body["error"]["code"] == "invalid_watermark"


async def test_an_upload_reaches_the_bot_and_is_served_back(client: Client, http: aiohttp.ClientSession):
    await client.start("ada-3")
    given = {"transport": "Bus", "name": "Ada"}
    before_picture = profile.answers(until="picture", **given)
    after_picture = profile.answers(until="confirm", **given)[len(before_picture) + 1 :]
    for text in ("Ada", *before_picture):
        await client.send(text, user_id="ada-3")
    await client.new_activities()
    picture = b"\x89PNG\r\n\x1a\n not really a picture, but typed as one"

    form = upload_form(
        {"type": "message", "from": {"id": "ada-3"}, "attachments": [{"contentType": "image/png", "name": "me.png"}]},
        ("me.png", "image/png", picture),
    )
    url = f"{client.base}/conversations/{client.conversation_id}/upload?userId=ada-3"
    async with http.post(url, data=form, headers=client.auth) as response:
        assert response.status == 200, await response.text()
        upload_id = (await response.json())["id"]

    for text in after_picture:  # the profile's other questions, up to its summary
        await client.send(text, user_id="ada-3")
    sent, *replies = await client.new_activities()
    assert sent["id"] == upload_id
    (attachment,) = sent["attachments"]
    assert attachment["name"] == "me.png"
    assert attachment["contentType"] == "image/png"
    assert attachment["thumbnailUrl"] == attachment["contentUrl"]
    stored = Picture("image/png", attachment["contentUrl"], "me.png")
    summary = describe_profile(UserProfile(name="Ada", transport="Bus", picture=stored))
    assert summary in "\n".join(reply.get("text") or "" for reply in replies)
    async with http.get(attachment["contentUrl"]) as response:
        assert response.status == 200
        assert response.content_type == "image/png"
        assert await response.read() == picture


@pytest.mark.parametrize(("size", "status"), [(MAX_UPLOAD_BYTES, 200), (MAX_UPLOAD_BYTES + 1, 413)])
async def test_uploads_up_to_the_limit_are_taken(client: Client, http: aiohttp.ClientSession, size: int, status: int):
    await client.start()
    form = upload_form({"type": "message"}, ("big.bin", "application/octet-stream", b"x" * size))

    async with http.post(
        f"{client.base}/conversations/{client.conversation_id}/upload", data=form, headers=client.auth
    ) as response:
        assert response.status == status, await response.text()

    uploads = [a for a in await client.new_activities() if a.get("attachments")]
    assert [a["attachments"][0]["name"] for a in uploads] == (["big.bin"] if status == 200 else [])


async def test_an_uploaded_page_is_served_as_a_download_not_rendered(client: Client, http: aiohttp.ClientSession):
    await client.start()
    form = upload_form({"type": "message"}, ("x.html", "text/html", b"<script>alert(1)</script>"))
    async with http.post(
        f"{client.base}/conversations/{client.conversation_id}/upload", data=form, headers=client.auth
    ) as response:
        assert response.status == 200
    sent = (await client.new_activities())[2]
    assert "thumbnailUrl" not in sent["attachments"][0]

    async with http.get(sent["attachments"][0]["contentUrl"]) as response:
        assert response.content_type == "application/octet-stream"
        assert response.headers["Content-Disposition"] == "attachment"


async def test_an_unknown_attachment_is_a_404(server: ChatServer, http: aiohttp.ClientSession):
    async with http.get(f"{server.origin}/v3/attachments/nope/views/original") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "attachment_not_found"


async def test_a_refreshed_token_works_and_an_expired_one_does_not(client: Client, server: ChatServer, http):
    await client.start()
    first = client.token
    async with http.post(f"{client.base}/tokens/refresh", headers=client.auth) as response:
        assert response.status == 200
        refreshed = await response.json()
    assert refreshed["conversationId"] == client.conversation_id
    assert refreshed["token"] != first

    client.token = refreshed["token"]
    assert (await client.page())[0] == 200

    server.clock.now += TOKEN_SECONDS + 1
    status, body = await client.page()
    assert status == 403
    assert body["error"]["code"] == "token_expired"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer not-a-token"}, 403, "invalid_token"),
    ],
)
async def test_requests_without_a_valid_token_are_refused(
    client: Client, http: aiohttp.ClientSession, headers: dict[str, str], status: int, code: str
):
    await client.start()
    async with http.post(f"{client.base}/tokens/refresh", headers=headers) as response:
        assert response.status == status
        assert (await response.json())["error"]["code"] == code
    async with http.get(client.activities_url, headers=headers) as response:
        assert response.status == status


async def test_a_token_opens_only_its_own_conversation(server: ChatServer, http: aiohttp.ClientSession):
    alice, bob = Client(http, server.origin), Client(http, server.origin)
    await alice.start("alice")
    await bob.start("bob")

    bob.token = alice.token
    status, body = await bob.page()

    assert status == 403
    assert body["error"]["code"] == "wrong_conversation"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{nope", 400), (b"[]", 400), (b'{"text": "no type"}', 400)],
)
async def test_a_bad_activity_is_a_4xx_and_not_stored(client: Client, http, body: bytes, status: int):
    await client.start()
    assert len(await client.new_activities()) == 2

    async with http.post(
        client.activities_url, data=body, headers={**client.auth, "Content-Type": "application/json"}
    ) as response:
        assert response.status == status
        assert "error" in await response.json()

    assert await client.new_activities() == []


async def test_the_channel_routes_take_replies_and_proactive_messages(client: Client, server: ChatServer, http):
    """What a bot's ConnectorClient sends on channels that keep replyToId (the Emulator's path shape)."""
    await client.start()
    user_message = await client.send("hi")
    await client.new_activities()
    channel = f"{server.origin}/v3/conversations/{client.conversation_id}/activities"

    async with http.post(f"{channel}/{user_message}", json={"type": "message", "text": "a reply"}) as response:
        assert response.status == 200
        reply_id = (await response.json())["id"]
    async with http.post(channel, json={"type": "message", "text": "out of the blue"}) as response:
        assert response.status == 200
    async with http.post(channel, json={"type": "trace", "name": "on_turn_error"}) as response:
        assert response.status == 200

    reply, proactive = await client.new_activities()
    assert (reply["id"], reply["text"], reply["replyToId"]) == (reply_id, "a reply", user_message)
    assert proactive["text"] == "out of the blue"
    assert "replyToId" not in proactive
    assert reply["from"]["role"] == proactive["from"]["role"] == "bot"


async def test_a_bot_that_cannot_be_reached_is_a_502(serve_chat: Callable[..., Any], http: aiohttp.ClientSession):
    server = await serve_chat(bot_origin=f"http://127.0.0.1:{free_port()}")
    client = Client(http, server.origin)
    await client.start()  # the conversation exists even though the bot missed its conversationUpdate

    async with http.post(client.activities_url, json={"type": "message", "text": "hi"}, headers=client.auth) as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "bot_unreachable"


async def test_the_channel_routes_refuse_an_unknown_conversation(server: ChatServer, http: aiohttp.ClientSession):
    reply = {"type": "message", "text": "hi", "from": {"id": "state-bot"}}
    async with http.post(f"{server.origin}/v3/conversations/nobody/activities", json=reply) as response:
        assert response.status == 404


async def test_the_page_uses_the_local_web_chat_and_no_cdn(server: ChatServer, http: aiohttp.ClientSession):
    async with http.get(f"{server.origin}/") as response:
        assert response.status == 200
        page = await response.text()
    assert '<script src="/webchat.js"></script>' in page
    assert "https://" not in page
    async with http.get(f"{server.origin}/webchat.js") as response:
        assert response.status == 200
        assert await response.text() == WEBCHAT_STAND_IN


async def test_production_create_app_has_no_direct_line(settings: Settings):
    app = await create_app(settings)
    paths = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
    assert not [path for path in paths if path.startswith("/v3")]
    assert "/" not in paths


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "localhost", "::1", "192.168.1.10", "127.0.0.2"])
def test_any_host_but_127_0_0_1_is_refused(host: str):
    with pytest.raises(ChatError, match=f"HOST={host} refused"):
        local_settings(load_settings({"HOST": host}))


def test_app_credentials_are_dropped_for_the_local_chat():
    settings = local_settings(load_settings({"MicrosoftAppId": "some-app", "MicrosoftAppPassword": "secret"}))

    assert (settings.app_id, settings.app_password, settings.host) == ("", "", "127.0.0.1")


async def test_the_chat_entry_point_refuses_a_public_host(tmp_path: Path):
    env = bot_environment(HOST="0.0.0.0", PORT="0", SQLITE_PATH=str(tmp_path / "bot.sqlite3"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chat",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 2
    assert b"HOST=0.0.0.0 refused" in output
    assert b"Traceback" not in output
