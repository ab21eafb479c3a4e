"""In-process storage for tests and experiments. Nothing survives a restart.

Unlike botbuilder's ``MemoryStorage`` it keeps serialized JSON, so every read hands out a fresh copy, and it
enforces e_tags exactly like the durable backends.
"""

from __future__ import annotations

from .base import ETagConflictError, StateStorage, StoredRecord, new_e_tag


class MemoryStateStorage(StateStorage):
    name = "memory"

    def __init__(self) -> None:
        self._records: dict[str, StoredRecord] = {}

    async def _load(self, key: str) -> StoredRecord | None:
        return self._records.get(key)

    async def _insert(self, key: str, document: str) -> str:
        if key in self._records:
            raise ETagConflictError(f"memory: {key!r} was created by another writer")
        return self._put(key, document)

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        current = self._records.get(key)
        if current is None or current.e_tag != e_tag:
            raise ETagConflictError(f"memory: {key!r} changed since it was read")
        return self._put(key, document)

    async def _upsert(self, key: str, document: str) -> str:
        return self._put(key, document)

    async def _remove(self, key: str) -> None:
        self._records.pop(key, None)

    def _put(self, key: str, document: str) -> str:
        e_tag = new_e_tag()
        self._records[key] = StoredRecord(document, e_tag)
        return e_tag

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return "memory (state is lost when the process stops)"
