from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from storage import StateStorage
from tests.backends import BACKENDS


@pytest_asyncio.fixture(params=sorted(BACKENDS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStorage]:
    """A fresh, empty store of every backend in turn; closed afterwards."""
    store = await BACKENDS[request.param](request, tmp_path)
    try:
        yield store
    finally:
        await store.close()
