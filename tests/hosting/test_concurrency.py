"""Several worker processes, one store: concurrent turns lose no update and never tell a user a lie.

Real gunicorn (``gunicorn.conf.py``, the command ``make serve`` and App Service run) with 2 and 4 aiohttp
workers on one sqlite file, and 2 workers on Azure Blob storage (Azurite), serving the real app with the counting
bot (tests/support/counting_bot.py: a counter per conversation, a name per user, words the tests own). Messages
are sent all at once, so turns of one conversation race across processes; the e_tag checks, the retries and the
shared turn lock of ``hosting.pipeline`` must serialise them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from hosting.storage import build_storage
from tests.support import counting_bot
from tests.support.azurite import scratch_environment
from tests.support.channel import Conversation, FakeChannel, Reply
from tests.support.processes import GunicornProcess

MESSAGES = 64
COUNTING_APP = "tests.support.counting_bot:create_app"


@asynccontextmanager
async def _serve(tmp_path: Path, workers: int, **settings: str) -> AsyncIterator[GunicornProcess]:
    server = GunicornProcess(tmp_path / "gunicorn.log", COUNTING_APP, WEB_CONCURRENCY=str(workers), **settings)
    await server.start()
    try:
        yield server
    finally:
        assert await server.stop() == 0


async def _named(conversation: Conversation, name: str) -> None:
    await conversation.say("hi")
    assert (await conversation.say(counting_bot.call_me(name))).texts == [counting_bot.named(name)]


async def _stored_count(conversation: Conversation, server: GunicornProcess) -> int:
    """The conversation's counter as the store holds it."""
    key = f"{conversation.channel_id}/conversations/{conversation.conversation_id}"
    store = await build_storage(server.settings.store)
    try:
        stored = (await store.read([key]))[key]
    finally:
        await store.close()
    return stored[counting_bot.COUNTER]["count"]


async def _hot_conversation(conversation: Conversation, server: GunicornProcess) -> None:
    """A named user sends 64 messages into one conversation at once: one echo each, numbers distinct and
    contiguous, all stored."""
    await _named(conversation, "Ada")
    texts = [f"burst {i}" for i in range(MESSAGES)]

    async def send(text: str) -> Reply:
        async with conversation.session.post(conversation.bot_url, json=conversation.activity(text=text)) as answer:
            body = await answer.json() if answer.content_type == "application/json" else None
            return Reply(answer.status, body, (body or {}).get("activities", []))

    conversation.channel.take()
    replies = await asyncio.gather(*(send(text) for text in texts))

    assert sorted({reply.status for reply in replies}) == [200 if conversation.expect_replies else 201]
    if conversation.expect_replies:
        delivered = [activity for reply in replies for activity in reply.activities]
    else:
        delivered = conversation.channel.take()
    echoes = [counting_bot.counted(a.get("text") or "") for a in delivered if a.get("type") == "message"]
    assert len(delivered) == MESSAGES, "nothing but the echoes: no busy reply, no apology"
    assert None not in echoes, [a.get("text") for a in delivered]
    assert sorted(echo.text for echo in echoes) == sorted(texts)
    assert {echo.name for echo in echoes} == {"Ada"}
    numbers = sorted(echo.number for echo in echoes)
    assert numbers == list(range(3, 3 + MESSAGES)), "after 'hi' and the name: 3, 4, ... each once"
    assert await _stored_count(conversation, server) == numbers[-1]


async def test_one_user_naming_themselves_in_ten_conversations_at_once(
    tmp_path: Path, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """Ten first turns race for one UserState record. Whichever name is stored, the bot confirmed it, and every
    conversation that confirmed a name then knows the user by the stored one."""
    async with _serve(tmp_path, 2, STORAGE="sqlite", SQLITE_PATH=str(tmp_path / "bot.sqlite3")) as server:
        talks = [
            Conversation(http, server.messages_url, channel, user_id="the-user", expect_replies=True) for _ in range(10)
        ]
        await asyncio.gather(*(talk.say("hi") for talk in talks))

        answers = await asyncio.gather(
            *(talk.post(talk.activity(text=counting_bot.call_me(f"Name {i}"))) for i, talk in enumerate(talks))
        )

        assert {answer.status for answer in answers} == {200}
        thanked = {i for i, answer in enumerate(answers) if answer.texts == [counting_bot.named(f"Name {i}")]}
        assert thanked, [answer.text for answer in answers]
        store = await build_storage(server.settings.store)
        try:
            stored = await store.read(["emulator/users/the-user"])
        finally:
            await store.close()
        stored_name = stored["emulator/users/the-user"][counting_bot.USER]["name"]
        assert stored_name in {f"Name {i}" for i in thanked}
        for i in thanked:
            follow_up = await talks[i].say("and now?")
            assert follow_up.texts == [counting_bot.echo("and now?", 3, stored_name)]


COPIES = 4
ACTIVITIES = 8


async def _copies_at_once(conversation: Conversation, server: GunicornProcess) -> None:
    """A channel delivers each of 8 activities 4 times, all 32 requests at once, over the workers: every copy is
    answered without an error, each activity is applied once (the counter moves exactly 8) and echoed once (in
    expectReplies every copy's answer carries its activity's one echo), and each duplicate logs one
    ``redelivered`` line."""
    messages = [conversation.activity(text=f"copied {i}") for i in range(ACTIVITIES)]

    async def send(message: dict) -> Reply:
        async with conversation.session.post(conversation.bot_url, json=message) as answer:
            body = await answer.json() if answer.content_type == "application/json" else None
            return Reply(answer.status, body, (body or {}).get("activities", []))

    conversation.channel.take()
    replies = await asyncio.gather(*(send(message) for message in messages for _ in range(COPIES)))

    assert {reply.status for reply in replies} == {200 if conversation.expect_replies else 201}
    if conversation.expect_replies:
        by_activity: dict[str, set[str]] = {}
        for message, reply in zip((m for m in messages for _ in range(COPIES)), replies, strict=True):
            by_activity.setdefault(message["text"], set()).update(reply.texts)
        assert all(len(echoes) == 1 for echoes in by_activity.values()), by_activity
        delivered = [echo for echoes in by_activity.values() for echo in echoes]
    else:
        delivered = [activity.get("text") or "" for activity in conversation.channel.take()]
    echoes = [counting_bot.counted(text) for text in delivered]
    assert None not in echoes, delivered
    assert sorted(echo.text for echo in echoes) == sorted(message["text"] for message in messages)
    assert sorted(echo.number for echo in echoes) == list(range(1, ACTIVITIES + 1)), "applied once each"
    assert await _stored_count(conversation, server) == ACTIVITIES
    redelivered = server.log_path.read_text().count(": redelivered, ")
    assert redelivered == ACTIVITIES * (COPIES - 1)


Scenario = Callable[[Conversation, GunicornProcess], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {"hot-conversation": _hot_conversation, "copies-of-activities": _copies_at_once}


@pytest.mark.parametrize(
    ("scenario", "workers"),
    [("hot-conversation", 2), ("hot-conversation", 4), ("copies-of-activities", 2)],
)
@pytest.mark.parametrize("expect_replies", [False, True], ids=["normal", "expectReplies"])
async def test_concurrent_turns_over_workers_on_sqlite_lose_nothing_and_apply_each_activity_once(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    channel: FakeChannel,
    scenario: str,
    workers: int,
    expect_replies: bool,
) -> None:
    settings = {"STORAGE": "sqlite", "SQLITE_PATH": str(tmp_path / "bot.sqlite3")}
    async with _serve(tmp_path, workers, **settings) as server:
        talk = Conversation(http, server.messages_url, channel, expect_replies=expect_replies)
        await SCENARIOS[scenario](talk, server)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_concurrent_turns_over_workers_on_blob_lose_nothing_and_apply_each_activity_once(
    tmp_path: Path, http: aiohttp.ClientSession, channel: FakeChannel, azurite, scenario: str
) -> None:
    async with _serve(tmp_path, 2, **scratch_environment(azurite, "blob")) as server:
        await SCENARIOS[scenario](Conversation(http, server.messages_url, channel), server)


async def test_memory_storage_with_several_workers_is_refused(tmp_path: Path) -> None:
    server = GunicornProcess(tmp_path / "gunicorn.log", STORAGE="memory", WEB_CONCURRENCY="2")

    exit_code = await server.run_expecting_failure()

    log = server.log_path.read_text()
    assert exit_code == 2
    assert "STORAGE=memory" in log
    assert "WEB_CONCURRENCY=2" in log
    assert "Traceback" not in log
