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
from pathlib import Path

import aiohttp

from app import create_app
from config import load_settings
from storage.base import EXPIRES_AT
from tests.channel import Conversation, FakeChannel, serving


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
        assert "#3" in (await talk.say("one more")).text
        written = time.time()

        stored = _stored(path)
        conversation = stored[f"emulator/conversations/{talk.conversation_id}"]
        assert written - 5 <= conversation[EXPIRES_AT] <= written + 2
        assert EXPIRES_AT not in stored[f"emulator/users/{talk.user_id}"]  # USER_TTL=off: kept until forgotten

        await asyncio.sleep(2.5)  # past the conversation's time to live

        again = (await talk.say("still me")).text
        assert again.startswith("Ada sent: still me")  # the profile did not expire
        assert "#1 " in again  # the conversation's counter did
