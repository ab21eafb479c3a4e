from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from app import create_app
from config import Settings, load_settings
from hosting.storage import StateStorage
from tests.support.azurite import azurite  # noqa: F401 - session fixture for the blob and table backends
from tests.support.backends import BACKENDS
from tests.support.channel import Conversation, FakeChannel, serving
from tests.support.cosmos_server import cosmos_server  # noqa: F401 - session fixture for the cosmos backend


@pytest_asyncio.fixture(params=sorted(BACKENDS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStorage]:
    """A fresh, empty store of every backend in turn; closed afterwards."""
    store = await BACKENDS[request.param](request, tmp_path)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an app under test: sqlite in a private folder, any free port, no credentials."""
    return load_settings({"PORT": "0", "SQLITE_PATH": str(tmp_path / "state" / "bot.sqlite3")})


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[FakeChannel]:
    fake = FakeChannel()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def bot_url(settings: Settings) -> AsyncIterator[str]:
    """The real app, served over real HTTP on 127.0.0.1 and a free port; yields its messages URL."""
    async with serving(await create_app(settings)) as url:
        yield url


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=[False, True], ids=["normal", "expectReplies"])
def conversation(request: pytest.FixtureRequest, http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel):
    """A new user in a new conversation with the bot, in each delivery mode."""
    return Conversation(http, bot_url, channel, expect_replies=request.param)
