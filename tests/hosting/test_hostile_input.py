"""Hostile requests against the real app over real HTTP: a table of malformed requests and generated junk.

Every one must get a 4xx with a JSON error body (never a 5xx, never a traceback), and another user's stored
state must come through untouched. Turns use ``expectReplies``, so nothing depends on outgoing delivery; every
serviceUrl is on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app import create_app
from config import Settings, load_settings
from hosting.http import MAX_ATTACHMENTS, MAX_DEPTH, MAX_ID_LENGTH, MAX_MEMBERS, service_url_problem
from tests.support import words
from tests.support.channel import BOT_ID, Conversation, FakeChannel

LOCAL = "http://127.0.0.1:9/"


def base(**fields: Any) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "type": "message",
        "text": "hi",
        "channelId": "emulator",
        "serviceUrl": LOCAL,
        "deliveryMode": "expectReplies",
        "from": {"id": "mallory"},
        "recipient": {"id": BOT_ID},
        "conversation": {"id": "mallory-conversation"},
    }
    activity.update(fields)
    return activity


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"x": value}
    return value


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# (body: dict -> JSON, or bytes sent as they are; Content-Type; expected status; text the message must contain)
CASES: dict[str, tuple[Any, str | None, int, str]] = {
    "type is a number": (base(type=5), "application/json", 400, "type"),
    "type is empty": (base(type=""), "application/json", 400, "type"),
    "text is an object": (base(text={"a": 1}), "application/json", 400, "text"),
    "text is a list": (base(text=["hi"]), "application/json", 400, "text"),
    "conversation.id is a number": (base(conversation={"id": 5}), "application/json", 400, "conversation.id"),
    "conversation is a string": (base(conversation="c1"), "application/json", 400, "conversation"),
    "conversation.isGroup is a string": (
        base(conversation={"id": "c", "isGroup": "yes"}),
        "application/json",
        400,
        "conversation.isGroup",
    ),
    "from.id is a number": (base(**{"from": {"id": 7}}), "application/json", 400, "from.id"),
    "from.id is empty": (base(**{"from": {"id": ""}}), "application/json", 400, "from.id"),
    "recipient is a list": (base(recipient=[BOT_ID]), "application/json", 400, "recipient"),
    "channelId is a list": (base(channelId=["emulator"]), "application/json", 400, "channelId"),
    "serviceUrl is a number": (base(serviceUrl=80), "application/json", 400, "serviceUrl"),
    "timestamp is not a date": (base(timestamp="yesterday"), "application/json", 400, "timestamp"),
    "timestamp is a number": (base(timestamp=1700000000), "application/json", 400, "timestamp"),
    "localTimestamp month 13": (base(localTimestamp="2024-13-45T00:00:00Z"), "application/json", 400, "localTimestamp"),
    "membersAdded is an object": (base(membersAdded={"id": "x"}), "application/json", 400, "membersAdded"),
    "membersAdded holds a string": (base(membersAdded=["x"]), "application/json", 400, "membersAdded[0]"),
    "membersAdded id is a number": (base(membersAdded=[{"id": 1}]), "application/json", 400, "membersAdded[0].id"),
    "too many membersAdded": (
        base(type="conversationUpdate", membersAdded=[{"id": f"m{i}"} for i in range(MAX_MEMBERS + 1)]),
        "application/json",
        400,
        "membersAdded",
    ),
    "3000 membersAdded": (
        base(type="conversationUpdate", membersAdded=[{"id": f"m{i}"} for i in range(3000)]),
        "application/json",
        400,
        "membersAdded",
    ),
    "too many attachments": (
        base(attachments=[{"contentType": "image/png", "contentUrl": LOCAL}] * (MAX_ATTACHMENTS + 1)),
        "application/json",
        400,
        "attachments",
    ),
    "attachment contentType is a number": (
        base(attachments=[{"contentType": 1}]),
        "application/json",
        400,
        "attachments[0].contentType",
    ),
    "entities is an object": (base(entities={"type": "mention"}), "application/json", 400, "entities"),
    "suggestedActions.to is a string": (
        base(suggestedActions={"to": "u1", "actions": []}),
        "application/json",
        400,
        "suggestedActions.to",
    ),
    "replyToId is a number": (base(replyToId=3), "application/json", 400, "replyToId"),
    "channelData nested too deep": (
        base(channelData=nested(MAX_DEPTH + 5)),
        "application/json",
        400,
        "nested deeper",
    ),
    "100,000 nested arrays": (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested deeper"),
    "100,000 unclosed objects": (b'{"a":' * 100_000, "application/json", 400, ""),
    "conversation.id is a lone surrogate": (
        raw(
            '{"type":"message","channelId":"emulator","serviceUrl":"http://127.0.0.1:9/","from":{"id":"m"},'
            '"recipient":{"id":"bot-1"},"conversation":{"id":"\\ud800"}}'
        ),
        "application/json",
        400,
        "conversation.id",
    ),
    "text holds a lone surrogate": (
        raw(
            '{"type":"message","text":"a\\udfffb","channelId":"emulator","serviceUrl":"http://127.0.0.1:9/",'
            '"from":{"id":"m"},"recipient":{"id":"bot-1"},"conversation":{"id":"c"}}'
        ),
        "application/json",
        400,
        "text",
    ),
    "conversation.id holds NUL": (base(conversation={"id": "c\x00"}), "application/json", 400, "conversation.id"),
    "from.id holds a newline": (
        base(**{"from": {"id": "a\nINFO forged log line"}}),
        "application/json",
        400,
        "from.id",
    ),
    "conversation.id too long": (
        base(conversation={"id": "c" * (MAX_ID_LENGTH + 1)}),
        "application/json",
        400,
        "conversation.id is longer",
    ),
    "conversation.id of 60 KB": (base(conversation={"id": "c" * 60_000}), "application/json", 400, "conversation.id"),
    "channelId too long": (base(channelId="e" * 65), "application/json", 400, "channelId is longer"),
    "activity id too long": (base(id="i" * 1000), "application/json", 400, "id is longer"),
    "serviceUrl on the internet, no credentials": (
        base(serviceUrl="https://example.com/"),
        "application/json",
        400,
        "serviceUrl",
    ),
    "serviceUrl is the metadata address": (
        base(serviceUrl="http://169.254.169.254/latest/"),
        "application/json",
        400,
        "serviceUrl",
    ),
    "serviceUrl is IPv6 link-local": (base(serviceUrl="http://[fe80::1]:80/"), "application/json", 400, "serviceUrl"),
    "serviceUrl is mapped metadata": (
        base(serviceUrl="http://[::ffff:169.254.169.254]/"),
        "application/json",
        400,
        "serviceUrl",
    ),
    "serviceUrl 127.1 shorthand": (base(serviceUrl="http://127.1:9/"), "application/json", 400, "serviceUrl"),
    "serviceUrl decimal host": (base(serviceUrl="http://2130706433:9/"), "application/json", 400, "serviceUrl"),
    "serviceUrl hex host": (base(serviceUrl="http://0x7f.0.0.1:9/"), "application/json", 400, "serviceUrl"),
    "serviceUrl with a password": (base(serviceUrl="http://u:p@127.0.0.1:9/"), "application/json", 400, "serviceUrl"),
    "serviceUrl with a bad port": (base(serviceUrl="http://127.0.0.1:99999/"), "application/json", 400, "serviceUrl"),
    "serviceUrl with a space": (base(serviceUrl="http://127.0.0.1:9/ x"), "application/json", 400, "serviceUrl"),
    "serviceUrl with a backslash": (
        base(serviceUrl="http://127.0.0.1:9\\@example.com/"),
        "application/json",
        400,
        "serviceUrl",
    ),
    "serviceUrl is a file": (base(serviceUrl="file:///etc/passwd"), "application/json", 400, "serviceUrl"),
    "serviceUrl is a metadata name": (
        base(serviceUrl="http://metadata.google.internal/"),
        "application/json",
        400,
        "serviceUrl",
    ),
    "NaN in the body": (b'{"type": "message", "value": NaN}', "application/json", 400, "JSON"),
    "a 5000-digit number": (b'{"type": "message", "value": ' + b"9" * 5000 + b"}", "application/json", 400, "JSON"),
    "a number that overflows to infinity": (
        b'{"type": "message", "value": 1e400}',
        "application/json",
        400,
        "too large",
    ),
    "a JSON array": (b"[]", "application/json", 400, "JSON object"),
    "a JSON string": (b'"hello"', "application/json", 400, "JSON object"),
    "an empty body": (b"", "application/json", 400, "JSON"),
    "not UTF-8": (b'{"text": "\xff\xfe"}', "application/json", 400, "JSON"),
    "UTF-16 hiding a lone surrogate": (
        raw(
            '{"type":"message","text":"\\ud800","channelId":"emulator","serviceUrl":"http://127.0.0.1:9/",'
            '"from":{"id":"m"},"recipient":{"id":"bot-1"},"conversation":{"id":"c"}}'
        )
        .decode()
        .encode("utf-16"),
        "application/json",
        400,
        "JSON",
    ),
    "missing conversation": (
        {k: v for k, v in base().items() if k != "conversation"},
        "application/json",
        400,
        "conversation.id",
    ),
    "text/plain": (base(), "text/plain", 415, "Content-Type"),
    "no Content-Type": (base(), None, 415, "Content-Type"),
    "over MAX_BODY_BYTES": (base(text="x" * (1024 * 1024 + 1)), "application/json", 413, "larger"),
}


def snapshot(path: Path, user_id: str, conversation_id: str) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT key, document FROM bot_state WHERE key IN (?, ?)",
            (f"emulator/users/{user_id}", f"emulator/conversations/{conversation_id}"),
        ).fetchall()
    return dict(rows)


@pytest_asyncio.fixture
async def victim(http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel, settings: Settings) -> AsyncIterator:
    """Another user, with a name and a message count stored before the attack."""
    talk = Conversation(
        http, bot_url, channel, user_id="victim-user", conversation_id="victim-conversation", expect_replies=True
    )
    await talk.say("hi")
    await talk.say("Ada")
    before = snapshot(settings.store.path, talk.user_id, talk.conversation_id)
    assert len(before) == 2
    yield before
    assert snapshot(settings.store.path, talk.user_id, talk.conversation_id) == before
    reply = await talk.say("still me?")
    words.expect_echo(reply.text, "still me?", "Ada")  # the sample's echo (tests/support/words.py)


async def send(http: aiohttp.ClientSession, url: str, body: Any, content_type: str | None) -> tuple[int, str, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    skip = () if content_type else ("Content-Type",)
    async with http.post(url, data=io.BytesIO(data), headers=headers, skip_auto_headers=skip) as response:
        return response.status, response.content_type, await response.text()


def assert_refused_cleanly(status: int, content_type: str, text: str) -> dict[str, Any]:
    assert 400 <= status < 500, (status, text[:500])
    assert content_type == "application/json", text[:500]
    body = json.loads(text)
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str)
    assert isinstance(body["error"]["message"], str)
    assert "Traceback" not in text
    assert len(text) < 2000  # the error never echoes a large input back
    return body


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_malformed_requests_are_refused_with_a_json_4xx(
    http: aiohttp.ClientSession,
    bot_url: str,
    channel: FakeChannel,
    victim: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    body, content_type, expected_status, expected_text = CASES[case]
    caplog.clear()

    status, got_type, text = await send(http, bot_url, body, content_type)

    error = assert_refused_cleanly(status, got_type, text)
    assert status == expected_status, text
    assert expected_text in error["error"]["message"], error
    assert channel.received == []
    assert not any(record.exc_info for record in caplog.records)
    assert all(len(record.getMessage()) < 300 for record in caplog.records)  # no 60 KB ids in the log


async def test_max_body_bytes_is_the_limit(http: aiohttp.ClientSession, tmp_path: Path, channel: FakeChannel) -> None:
    settings = load_settings({"PORT": "0", "SQLITE_PATH": str(tmp_path / "bot.sqlite3"), "MAX_BODY_BYTES": "2048"})
    runner = web.AppRunner(await create_app(settings))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/messages"
        small = await send(http, url, base(text="x" * 1000), "application/json")
        large = await send(http, url, base(text="x" * 3000), "application/json")
    finally:
        await runner.cleanup()

    assert small[0] == 200, small
    assert large[0] == 413
    assert "2048" in json.loads(large[2])["error"]["message"]


def test_the_matrix_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    ("url", "credentials", "allowed"),
    [
        ("http://localhost:3979/", False, True),
        ("http://127.0.0.1:3979/", False, True),
        ("http://127.8.9.10/", False, True),
        ("http://[::1]:3979/", False, True),
        ("https://smba.trafficmanager.net/emea/", False, False),
        ("http://localhost.example.com/", False, False),
        ("https://smba.trafficmanager.net/emea/", True, True),
        ("https://europe.webchat.botframework.com/", True, True),
        ("http://smba.trafficmanager.net/emea/", True, False),
        ("http://localhost:3979/", True, True),
        ("http://169.254.169.254/", True, False),
        ("https://169.254.1.1/", True, False),
        ("https://[fe80::1%25eth0]/", True, False),
        ("https://[fd00:ec2::254]/", True, False),
        ("https://100.100.100.200/", True, False),
        ("https://0.0.0.0/", True, False),
        ("https://metadata.google.internal/", True, False),
        ("https://2130706433/", True, False),
        ("https://10.0.0.1/", True, True),
    ],
)
def test_service_url_policy(url: str, credentials: bool, allowed: bool) -> None:
    assert (service_url_problem(url, credentials=credentials) is None) is allowed


# Generated requests: activities with any JSON in the fields the bot reads, and plain junk.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
ids = st.text(max_size=12) | st.sampled_from(["", "\x00", "\u2028", "a" * 300]) | json_values
service_urls = (
    st.sampled_from(
        [LOCAL, "https://example.com/", "http://169.254.169.254/", "http://[::1]:9/", "ftp://127.0.0.1/", "x"]
    )
    | json_values
)
activities = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "conversationUpdate", "typing", "invoke"]) | json_values,
        "text": st.text(max_size=40) | json_values,
        "channelId": st.just("emulator") | ids,
        "serviceUrl": service_urls,
        "from": st.fixed_dictionaries({}, optional={"id": ids, "name": json_values}) | json_values,
        "recipient": st.fixed_dictionaries({}, optional={"id": ids}) | json_values,
        "conversation": st.fixed_dictionaries({}, optional={"id": ids, "isGroup": json_values}) | json_values,
        "membersAdded": st.lists(st.fixed_dictionaries({}, optional={"id": ids}) | json_values, max_size=3),
        "attachments": st.lists(
            st.fixed_dictionaries({}, optional={"contentType": json_values, "contentUrl": json_values}), max_size=2
        )
        | json_values,
        "timestamp": st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01", "nope", "9999-12-31T23:59:59+14:00"])
        | json_values,
        "value": json_values,
        "channelData": json_values,
        "deliveryMode": st.just("expectReplies"),
    },
)
# Mostly-valid activities: a good base with a few fields replaced, so that many reach the bot and run a turn.
mutated = st.builds(
    lambda changes, user: {**base(**{"from": {"id": user}, "conversation": {"id": user}}), **changes},
    st.dictionaries(
        st.sampled_from(["type", "text", "membersAdded", "attachments", "timestamp", "value", "channelData", "locale"]),
        json_values | st.text(max_size=20) | st.sampled_from(["message", "invoke", "conversationUpdate", "event"]),
        max_size=2,
    ),
    st.text(alphabet="abcdefghij", min_size=1, max_size=8),
)
# Valid messages with any text (commands, names, emoji, control characters): real turns through the bot.
messages = st.builds(
    lambda text, user: base(text=text, **{"from": {"id": user}, "conversation": {"id": user}}),
    st.text(max_size=60) | st.sampled_from(["help", "profile", "show", "forget", "yes", "cancel", "Car", "42"]),
    st.sampled_from(["gen-a", "gen-b", "gen-c"]),
)
junk = st.binary(max_size=200) | st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass"))
requests = st.one_of(
    messages, mutated, activities.map(lambda a: {**a, "deliveryMode": "expectReplies"}), json_values, junk
)

EXAMPLES = 200


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=requests)
async def test_generated_requests_never_get_a_5xx_and_never_touch_another_user(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel, victim: dict[str, str], body: Any
) -> None:
    """The victim's state is compared once after every example has run (in the fixture's teardown)."""
    status, content_type, text = await send(http, bot_url, body, "application/json")
    event(f"HTTP {status}")

    if status == 200:
        assert isinstance(body, dict)
        assert "activities" in json.loads(text)
    else:
        assert_refused_cleanly(status, content_type, text)
