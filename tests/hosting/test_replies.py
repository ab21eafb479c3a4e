"""Replies in normal delivery mode travel to the activity's serviceUrl after the turn is saved; a channel that
cannot take them costs a bounded time, one warning line, and a 502 saying so, and stalls nobody else (the real app
with the counting bot of tests/support/counting_bot.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from hosting import replies
from tests.support import counting_bot
from tests.support.channel import Conversation, FakeChannel
from tests.support.processes import free_port


@pytest_asyncio.fixture
async def silent_channel() -> AsyncIterator[str]:
    """A serviceUrl on loopback that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        for writer in held:  # aborted: the bot may have left unread bytes behind
            writer.transport.abort()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_service_url_is_a_quick_502_with_one_warning_and_the_turn_is_kept(
    http: aiohttp.ClientSession, counting_bot_url: str, channel: FakeChannel, caplog: pytest.LogCaptureFixture
) -> None:
    talk = Conversation(http, counting_bot_url, channel)
    await talk.say("hi")
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens there

    caplog.clear()
    started = time.monotonic()
    reply = await talk.post(talk.activity(text=counting_bot.call_me("Ada"), serviceUrl=dead))
    elapsed = time.monotonic() - started

    assert reply.status == 502
    assert reply.body["error"]["code"] == "reply_not_delivered"
    assert elapsed < replies.CONNECT_TIMEOUT_SECONDS + 2  # no retry loop (the SDK's took ~10 s)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "not delivered" in warnings[0].getMessage()
    assert (await talk.say("hello again")).texts == [counting_bot.echo("hello again", 3, "Ada")]  # it was stored


async def test_a_channel_that_never_answers_costs_a_bounded_time_and_stalls_no_other_user(
    http: aiohttp.ClientSession, counting_bot_url: str, channel: FakeChannel, silent_channel: str
) -> None:
    """Several replies stuck on a silent channel at once: another user's turn is served meanwhile (no thread
    pool to exhaust), and each stuck request ends with a 502 within the reply timeout."""
    stuck = [Conversation(http, counting_bot_url, channel) for _ in range(5)]
    other = Conversation(http, counting_bot_url, channel, expect_replies=True)
    await other.say("hi")

    started = time.monotonic()
    pending = [asyncio.create_task(talk.post(talk.activity(text="hi", serviceUrl=silent_channel))) for talk in stuck]
    await asyncio.sleep(0.5)
    answered = await other.say(counting_bot.call_me("Grace"))
    other_done = time.monotonic()
    results = await asyncio.gather(*pending)

    assert answered.texts == [counting_bot.named("Grace")]
    assert other_done - started < replies.TOTAL_TIMEOUT_SECONDS / 2
    assert [result.status for result in results] == [502] * len(stuck)
    assert time.monotonic() - started < replies.TOTAL_TIMEOUT_SECONDS + 5
