"""The turn pipeline: locks, retries, buffered replies, distinct outcomes (with the counting bot of
tests/support/counting_bot.py, whose words the tests own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest

from app import create_app
from config import Settings, load_settings
from hosting.pipeline import BUSY_TEXT, OUTAGE_TEXT, ConversationLocks, TurnOutcome
from hosting.storage import ETagConflictError, MemoryStateStorage, StorageError
from tests.support import counting_bot
from tests.support.channel import Conversation, FakeChannel, serving
from tests.support.processes import sqlite_write_lock_held


async def test_turns_of_one_conversation_run_one_at_a_time_and_locks_are_dropped() -> None:
    locks = ConversationLocks()
    inside: list[str] = []
    overlaps = 0

    async def turn(conversation: str) -> None:
        nonlocal overlaps
        async with locks.hold(conversation):
            overlaps += conversation in inside
            inside.append(conversation)
            await asyncio.sleep(0.01)
            inside.remove(conversation)

    await asyncio.gather(*(turn("a") for _ in range(5)), *(turn("b") for _ in range(5)))

    assert overlaps == 0
    assert len(locks) == 0


async def test_different_conversations_do_not_wait_for_each_other() -> None:
    locks = ConversationLocks()
    async with locks.hold("a"):
        await asyncio.wait_for(_enter(locks, "b"), timeout=1)
        assert len(locks) == 1


async def _enter(locks: ConversationLocks, key: str) -> None:
    async with locks.hold(key):
        pass


class RacedUserRecords(MemoryStateStorage):
    """A store where another process changes every user's record between our read and our write: each write of
    a ``.../users/...`` key conflicts. Counts the attempts. (A stand-in for a busy multi-instance deployment.)"""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False
        self.user_writes = 0

    async def write(self, changes: Mapping[str, object]) -> None:
        if self.raced and any("/users/" in key and "/conversations/" not in key for key in changes):
            self.user_writes += 1
            raise ETagConflictError("memory: changed by another writer (simulated)")
        await super().write(changes)


@pytest.mark.parametrize("retries", [1, 3])
@pytest.mark.parametrize("expect_replies", [False, True], ids=["normal", "expectReplies"])
async def test_a_turn_that_always_loses_its_race_gets_one_busy_reply_after_turn_retries_attempts(
    http: aiohttp.ClientSession,
    channel: FakeChannel,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    retries: int,
    expect_replies: bool,
) -> None:
    store = RacedUserRecords()
    settings = load_settings({"PORT": "0", "STORAGE": "memory", "TURN_RETRIES": str(retries)})

    async with serving(await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(store))) as url:
        talk = Conversation(http, url, channel, expect_replies=expect_replies)
        await talk.say("hi")
        store.raced = True
        before = {key: record.document for key, record in store._records.items()}

        reply = await talk.say(counting_bot.call_me("Ada"))  # naming writes the user's record: it always conflicts

    assert reply.texts == [BUSY_TEXT]
    assert len(reply.activities) == 1
    assert store.user_writes == retries
    assert {key: record.document for key, record in store._records.items()} == before
    busy_lines = [r for r in caplog.records if TurnOutcome.BUSY in r.getMessage() and r.levelname == "WARNING"]
    assert len(busy_lines) == 1


async def test_turns_fail_well_within_a_channels_patience_while_another_process_holds_the_write_lock(
    settings: Settings, counting_bot_url: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """A maintenance script left ``BEGIN IMMEDIATE`` open on the database. Every turn meanwhile (six conversations
    and three messages of one more, all at once) is told the bot cannot reach its memory, with a 503, in under
    10 s: each step of a turn used to wait out the 5 s busy timeout, one queued operation after another (40 s
    for the eighth of eight turns). Once the lock is given back, the bot remembers everyone."""
    ada = Conversation(http, counting_bot_url, channel, user_id="ada", expect_replies=True)
    await ada.say("hi")
    await ada.say(counting_bot.call_me("Ada"))
    others = [Conversation(http, counting_bot_url, channel, expect_replies=True) for _ in range(6)]
    posts = [talk.post(talk.activity(text="hello")) for talk in others]
    posts += [ada.post(ada.activity(text=f"message {i}")) for i in range(3)]

    async with sqlite_write_lock_held(settings.store.path):
        started = time.monotonic()
        replies = await asyncio.gather(*posts)
        elapsed = time.monotonic() - started

    assert elapsed < 10
    for reply in replies:
        assert reply.status == 503
        assert reply.body["error"]["code"] == TurnOutcome.STORAGE_UNAVAILABLE
        assert reply.texts == [OUTAGE_TEXT]
    assert (await ada.say("back?")).texts == [counting_bot.echo("back?", 3, "Ada")], "the refused turns saved nothing"


class ConflictThenOutage(MemoryStateStorage):
    """Every user record write conflicts (another process got there first), and then the store stops answering
    just as the pipeline writes the conversation's shared lock record."""

    async def write(self, changes: Mapping[str, object]) -> None:
        if any(key.endswith("/turn-lock") for key in changes):
            raise StorageError("memory: the store went away (simulated)")
        if any("/users/" in key and "/conversations/" not in key for key in changes):
            raise ETagConflictError("memory: changed by another writer (simulated)")
        await super().write(changes)


async def test_a_store_failing_while_the_shared_lock_is_taken_is_an_outage_not_a_500(
    http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    store = ConflictThenOutage()
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})

    async with serving(await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(store))) as url:
        talk = Conversation(http, url, channel, expect_replies=True)
        await talk.say("hi")
        reply = await talk.post(talk.activity(text=counting_bot.call_me("Ada")))  # naming writes the user's record

    assert reply.status == 503
    assert reply.body["error"]["code"] == TurnOutcome.STORAGE_UNAVAILABLE
    assert reply.texts == [OUTAGE_TEXT]
