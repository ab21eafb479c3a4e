"""CONVERSATION_TTL and USER_TTL reach the store: records carry their expiry, and an expired one reads as absent.

The expiry rules themselves (sliding TTL, expired reads as absent, batched cleanup, Cosmos native TTL) are proven
with a controllable clock in the storage contract suite; here the real app on sqlite, with real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from app import create_app
from config import ConfigError, load_settings
from hosting.storage import MemoryStateStorage
from hosting.storage.base import EXPIRES_AT, ExpiryPolicy
from tests.support import profile, words
from tests.support.channel import Conversation, FakeChannel, serving
from tests.support.clock import Clock
from tests.support.harness import BotHarness


def _stored(path: Path) -> dict[str, dict]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {key: json.loads(document) for key, document in db.execute("SELECT key, document FROM bot_state")}


async def test_records_carry_the_configured_expiry_and_an_expired_conversation_starts_afresh(
    tmp_path: Path, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    path = tmp_path / "bot.sqlite3"
    settings = load_settings({"PORT": "0", "SQLITE_PATH": str(path), "CONVERSATION_TTL": "2s", "USER_TTL": "off"})
    async with serving(await create_app(settings)) as url:
        talk = Conversation(http, url, channel)
        await talk.say("hi")
        await talk.say("Ada")
        assert words.echo_number((await talk.say("one more")).text) == 3
        written = time.time()

        stored = _stored(path)
        conversation = stored[f"emulator/conversations/{talk.conversation_id}"]
        assert written - 5 <= conversation[EXPIRES_AT] <= written + 2
        assert EXPIRES_AT not in stored[f"emulator/users/{talk.user_id}"]  # USER_TTL=off: kept until forgotten

        await asyncio.sleep(2.5)  # past the conversation's time to live

        again = words.expect_echo((await talk.say("still me")).text, "still me", "Ada")  # the profile did not expire
        assert again.number == 1  # the conversation's counter did


async def test_an_active_users_records_never_expire_and_an_idle_ones_do() -> None:
    """Sliding means sliding: every turn that reads a record extends it, even when nothing in it changes (the
    profile of a user who only chats). Time moves by hand; the bot runs with the pipeline's load and save."""
    store = MemoryStateStorage()
    clock = Clock()
    store.expiry = ExpiryPolicy(conversation_ttl=timedelta(hours=1), user_ttl=timedelta(hours=1), clock=clock)
    active = BotHarness(store, user_id="active")
    idle = BotHarness(store, user_id="idle", conversation_id="conv-idle")
    for user, name in ((active, "Ada"), (idle, "Ida")):
        await user.say_all("hi", name, *profile.answers(transport="Car"))

    for _ in range(10):  # five hours of a message every half hour
        clock.advance(minutes=30)
        words.expect_echo(await active.say("still here"), "still here", "Ada")

    assert (await active.stored(active.user_key))["UserProfile"]["transport"] == "Car"
    assert await idle.stored(idle.user_key) is None
    assert await idle.say("back again") == words.stranger()


def test_the_users_record_must_live_at_least_as_long_as_their_conversations() -> None:
    """The user's record holds the index of their conversations that forget uses: it may not expire first."""
    for conversation_ttl, user_ttl in (("30d", "7d"), ("off", "400d")):
        with pytest.raises(ConfigError, match=r"USER_TTL=.* is shorter than CONVERSATION_TTL"):
            load_settings({"CONVERSATION_TTL": conversation_ttl, "USER_TTL": user_ttl})
    assert load_settings({"CONVERSATION_TTL": "30d", "USER_TTL": "30d"}).user_ttl == timedelta(days=30)
