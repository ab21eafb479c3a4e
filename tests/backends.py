"""How the contract suite gets a fresh, empty store of each backend.

Each factory receives the pytest ``request`` (to pull in service fixtures such as Azurite lazily, so a run that
selects only ``memory`` starts nothing) and a private temporary folder. Every backend declared in
``storage/registry.py`` needs a factory here (tests/test_config.py checks it); factories for extra targets of a
backend (``cosmos-real``) may be added too.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from storage import MemoryStateStorage, SqliteStorage, StateStorage

BackendFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[StateStorage]]


async def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    return MemoryStateStorage()


async def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    return await SqliteStorage.open(tmp_path / "state.sqlite3")


async def _cosmos(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.cosmos_server import open_scratch_storage

    return await open_scratch_storage(request.getfixturevalue("cosmos_server").target())


async def _cosmos_real(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.cosmos_server import open_scratch_storage, real_cosmos_target

    return await open_scratch_storage(real_cosmos_target())


async def _blob(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.azurite import open_scratch_blob_storage

    return await open_scratch_blob_storage(request.getfixturevalue("azurite"))


async def _table(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.azurite import open_scratch_table_storage

    return await open_scratch_table_storage(request.getfixturevalue("azurite"))


BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "blob": _blob,
    "table": _table,
    "cosmos": _cosmos,
}

# A real Cosmos DB account or the official emulator joins the suite only when configured (it cannot run on the
# machines this project is tested on); tests/test_cosmos_storage.py says so in one explicit skip otherwise.
if os.environ.get("COSMOS_ENDPOINT", "").strip() and os.environ.get("COSMOS_KEY", "").strip():
    BACKENDS["cosmos-real"] = _cosmos_real


# -- planting damaged records -----------------------------------------------------------------------------------
# A record nobody can decode must be written past the codec, with the backend's own primitive (``_upsert`` takes
# the document text as is). Cosmos keeps ``document`` as a JSON object, so text that is not JSON goes in as a
# JSON string there: what a foreign or broken writer could leave behind.

DamageWriter = Callable[[StateStorage, str, str], Awaitable[None]]


async def _upsert_raw(storage: StateStorage, key: str, text: str) -> None:
    await storage._upsert(key, text)


async def _cosmos_raw(storage: StateStorage, key: str, text: str) -> None:
    import json

    from storage.keys import escape_cosmos_key

    try:
        document: object = json.loads(text)
    except ValueError:
        document = text
    item_id = escape_cosmos_key(key)
    await storage._container.upsert_item({"id": item_id, "realId": key, "document": document})  # type: ignore[attr-defined]


RAW_WRITERS: dict[str, DamageWriter] = {"cosmos": _cosmos_raw}


async def plant_raw(storage: StateStorage, key: str, text: str) -> None:
    """Store ``text`` as ``key``'s document, bypassing the codec (to plant records that cannot be decoded)."""
    await RAW_WRITERS.get(storage.name, _upsert_raw)(storage, key, text)
