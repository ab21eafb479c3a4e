"""Everything a store holds, read past the storage contract, to prove that forgotten values are gone.

The contract has no listing, so each backend is scanned with its own means: the memory store's dict, the sqlite
file's rows *and raw bytes* (main database and WAL: a deleted row must not linger in a free page or a WAL frame),
and for Azure the SDK clients the storage was opened with (every blob, every entity, every Cosmos item).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from hosting.storage import StateStorage

Scanner = Callable[[StateStorage], Awaitable[list[str]]]


async def _memory(storage: StateStorage) -> list[str]:
    return [f"{key} {record.document}" for key, record in storage._records.items()]  # type: ignore[attr-defined]


async def _sqlite(storage: StateStorage) -> list[str]:
    path = Path(storage._path)  # type: ignore[attr-defined]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = [f"{key} {document}" for key, document in db.execute("SELECT key, document FROM bot_state")]
    raw = [
        candidate.read_bytes().decode("utf-8", "replace")
        for candidate in (path, Path(f"{path}-wal"))
        if candidate.exists()
    ]
    return rows + raw


async def _blob(storage: StateStorage) -> list[str]:
    container = storage._container  # type: ignore[attr-defined]
    found = []
    async for blob in container.list_blobs():
        download = await container.download_blob(blob.name)
        found.append(f"{blob.name} {(await download.readall()).decode('utf-8', 'replace')}")
    return found


async def _table(storage: StateStorage) -> list[str]:
    return [json.dumps(dict(entity), default=str) async for entity in storage._table.list_entities()]  # type: ignore[attr-defined]


async def _cosmos(storage: StateStorage) -> list[str]:
    container = storage._container  # type: ignore[attr-defined]
    return [json.dumps(item, default=str) async for item in container.read_all_items()]


SCANNERS: dict[str, Scanner] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "blob": _blob,
    "table": _table,
    "cosmos": _cosmos,
    "cosmos-real": _cosmos,
}


async def scan(storage: StateStorage) -> str:
    """The text of every record the store holds (keys included), joined."""
    return "\n".join(await SCANNERS[storage.name](storage))
