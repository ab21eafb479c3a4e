"""Fixtures of the engine's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from app import create_app
from config import Settings
from tests.support.channel import Conversation, FakeChannel, serving
from tests.support.counting_bot import counting_bot
from tests.support.identity import LoginServer


@pytest_asyncio.fixture
async def login() -> AsyncIterator[LoginServer]:
    """A local stand-in for Microsoft Entra ID's token endpoint (tests/support/identity.py)."""
    server = LoginServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def counting_bot_url(settings: Settings) -> AsyncIterator[str]:
    """The real app serving the counting bot (tests/support/counting_bot.py) over real HTTP, on sqlite in a private
    folder; yields its messages URL."""
    async with serving(await create_app(settings, bot_factory=counting_bot)) as url:
        yield url


@pytest.fixture(params=[False, True], ids=["normal", "expectReplies"])
def counting_conversation(
    request: pytest.FixtureRequest, http: aiohttp.ClientSession, counting_bot_url: str, channel: FakeChannel
) -> Conversation:
    """A new user in a new conversation with the counting bot, in each delivery mode."""
    return Conversation(http, counting_bot_url, channel, expect_replies=request.param)
