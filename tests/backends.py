"""How the contract suite gets a fresh, empty store of each backend.

Each factory receives the pytest ``request`` (to pull in service fixtures such as Azurite lazily, so a run that
selects only ``memory`` starts nothing) and a private temporary folder. Add a backend by adding a factory here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from storage import MemoryStateStorage, SqliteStorage, StateStorage

BackendFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[StateStorage]]


async def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    return MemoryStateStorage()


async def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    return await SqliteStorage.open(tmp_path / "state.sqlite3")


BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
}
