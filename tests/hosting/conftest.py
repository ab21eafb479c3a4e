"""Fixtures of the engine's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from app import create_app
from config import Settings
from tests.support.channel import serving
from tests.support.counting_bot import counting_bot


@pytest_asyncio.fixture
async def counting_bot_url(settings: Settings) -> AsyncIterator[str]:
    """The real app serving the counting bot (tests/support/counting_bot.py) over real HTTP, on sqlite in a private
    folder; yields its messages URL."""
    async with serving(await create_app(settings, bot_factory=counting_bot)) as url:
        yield url
