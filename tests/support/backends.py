"""How the contract suite gets a fresh, empty store of each backend.

Each factory receives the pytest ``request`` (to pull in service fixtures such as Azurite lazily, so a run that
selects only ``memory`` starts nothing) and a private temporary folder. Every backend declared in
``hosting/storage/registry.py`` needs a factory here (tests/bot/test_config.py checks it); factories for extra
targets of a backend (``cosmos-real``) may be added too.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hosting.storage import MemoryStateStorage, SqliteStorage, StateStorage
from hosting.storage.base import ANY_E_TAG, PendingWrite

BackendFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[StateStorage]]


async def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    return MemoryStateStorage()


async def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    return await SqliteStorage.open(tmp_path / "state.sqlite3")


async def _cosmos(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.support.cosmos_server import open_scratch_storage

    return await open_scratch_storage(request.getfixturevalue("cosmos_server").target())


async def _cosmos_real(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.support.cosmos_server import open_scratch_storage, real_cosmos_target

    return await open_scratch_storage(real_cosmos_target())


async def _blob(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.support.azurite import open_scratch_blob_storage

    return await open_scratch_blob_storage(request.getfixturevalue("azurite"))


async def _table(request: pytest.FixtureRequest, tmp_path: Path) -> StateStorage:
    from tests.support.azurite import open_scratch_table_storage

    return await open_scratch_table_storage(request.getfixturevalue("azurite"))


BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "blob": _blob,
    "table": _table,
    "cosmos": _cosmos,
}

# A real Cosmos DB account or the official emulator joins the suite only when configured (it cannot run on the
# machines this project is tested on); tests/hosting/test_cosmos_storage.py says so in one explicit skip otherwise.
if os.environ.get("COSMOS_ENDPOINT", "").strip() and os.environ.get("COSMOS_KEY", "").strip():
    BACKENDS["cosmos-real"] = _cosmos_real


# -- planting damaged records -----------------------------------------------------------------------------------
# A record nobody can decode must be written past the codec, with the backend's own primitives (an unconditional
# ``_write_one`` takes the document text as is). Cosmos keeps ``document`` as a JSON object, so text that is not
# JSON goes in as a JSON string there: what a foreign or broken writer could leave behind.

DamageWriter = Callable[[StateStorage, str, str], Awaitable[None]]


async def _write_raw(storage: StateStorage, key: str, text: str) -> None:
    await storage._write_one(PendingWrite(key, text, ANY_E_TAG))


async def _cosmos_raw(storage: StateStorage, key: str, text: str) -> None:
    import json

    from hosting.storage.keys import escape_cosmos_key

    try:
        document: object = json.loads(text)
    except ValueError:
        document = text
    item_id = escape_cosmos_key(key)
    await storage._container.upsert_item({"id": item_id, "realId": key, "document": document})  # type: ignore[attr-defined]


RAW_WRITERS: dict[str, DamageWriter] = {"cosmos": _cosmos_raw}


async def plant_raw(storage: StateStorage, key: str, text: str) -> None:
    """Store ``text`` as ``key``'s document, bypassing the codec (to plant records that cannot be decoded)."""
    await RAW_WRITERS.get(storage.name, _write_raw)(storage, key, text)


# -- reading records as the backend keeps them ------------------------------------------------------------------
# What a record is made of in the store itself, read past the codec and the backend's own unwrapping: enough to
# check that ``move_aside`` kept a damaged record exactly (compare before and after; keys are not included).


async def _memory_kept(storage: StateStorage, key: str) -> object:
    record = storage._records.get(key)  # type: ignore[attr-defined]
    return None if record is None else record.document


async def _sqlite_kept(storage: StateStorage, key: str) -> object:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(storage._path)) as db:  # type: ignore[attr-defined]
        row = db.execute("SELECT CAST(document AS BLOB) FROM bot_state WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


async def _blob_kept(storage: StateStorage, key: str) -> object:
    from azure.core.exceptions import ResourceNotFoundError

    from hosting.storage.keys import escape_blob_name

    try:
        download = await storage._container.download_blob(escape_blob_name(key))  # type: ignore[attr-defined]
    except ResourceNotFoundError:
        return None
    return await download.readall()


async def _table_kept(storage: StateStorage, key: str) -> object:
    from azure.core.exceptions import ResourceNotFoundError

    from hosting.storage.keys import escape_table_key
    from hosting.storage.table import ROW_KEY

    try:
        entity = await storage._table.get_entity(escape_table_key(key), ROW_KEY)  # type: ignore[attr-defined]
    except ResourceNotFoundError:
        return None
    return {name: value for name, value in entity.items() if name not in ("PartitionKey", "RowKey")}


async def _cosmos_kept(storage: StateStorage, key: str) -> object:
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    from hosting.storage.keys import escape_cosmos_key

    item_id = escape_cosmos_key(key)
    try:
        item = await storage._container.read_item(item=item_id, partition_key=item_id)  # type: ignore[attr-defined]
    except CosmosResourceNotFoundError:
        return None
    return {name: value for name, value in item.items() if name != "id" and not name.startswith("_")}


KEPT_READERS: dict[str, Callable[[StateStorage, str], Awaitable[object]]] = {
    "memory": _memory_kept,
    "sqlite": _sqlite_kept,
    "blob": _blob_kept,
    "table": _table_kept,
    "cosmos": _cosmos_kept,
}


async def kept(storage: StateStorage, key: str) -> object:
    """``key``'s record as the store keeps it (text, bytes, or the entity's or item's fields), or None if absent."""
    return await KEPT_READERS[storage.name](storage, key)


async def plant_bytes(storage: StateStorage, key: str, document: bytes) -> None:
    """Store raw ``document`` bytes as ``key``'s document, where a backend can hold bytes that are not text.

    Only sqlite (a TEXT column keeps whatever bytes it is given) and blob (the blob is bytes; they go inside the
    usual envelope). Memory, table and cosmos keep text or JSON, which cannot be invalid UTF-8.
    """
    if storage.name == "sqlite":
        import contextlib
        import sqlite3

        with contextlib.closing(sqlite3.connect(storage._path)) as db, db:  # type: ignore[attr-defined]
            db.execute(
                "INSERT INTO bot_state (key, e_tag, document, updated_at) VALUES (?, 'planted', CAST(? AS TEXT), '') "
                "ON CONFLICT (key) DO UPDATE SET document = excluded.document, e_tag = excluded.e_tag",
                (key, document),
            )
    elif storage.name == "blob":
        from hosting.storage.blob import _envelope
        from hosting.storage.keys import escape_blob_name

        name = escape_blob_name(key)
        head, tail = _envelope(name, key, "\x00").split(b"\x00")
        await storage._container.upload_blob(name, head + document + tail, overwrite=True)  # type: ignore[attr-defined]
    else:
        raise ValueError(f"{storage.name} cannot hold a document that is not text")
