"""In-process storage for tests and experiments. Nothing survives a restart.

Unlike botbuilder's ``MemoryStorage`` it keeps serialized JSON, so every read hands out a fresh copy, and it
enforces e_tags exactly like the durable backends. A write of several keys is all-or-nothing: every condition is
checked before anything changes, with no ``await`` in between.
"""

from __future__ import annotations

from .base import ANY_E_TAG, ETagConflictError, PendingWrite, StateStorage, StoredRecord, expires_at_of, new_e_tag


class MemoryStateStorage(StateStorage):
    name = "memory"
    atomic_writes = True
    expiry_cleanup = True

    def __init__(self) -> None:
        self._records: dict[str, StoredRecord] = {}

    async def _load(self, key: str) -> StoredRecord | None:
        return self._records.get(key)

    async def _write_atomic(self, writes: list[PendingWrite]) -> list[str]:
        for write in writes:
            self._check_condition(write)
        new_tags = []
        for write in writes:
            if write.delete:
                self._records.pop(write.key, None)
                new_tags.append("")
                continue
            e_tag = new_e_tag()
            self._records[write.key] = StoredRecord(write.document, e_tag)
            new_tags.append(e_tag)
        return new_tags

    def _check_condition(self, write: PendingWrite) -> None:
        current = self._records.get(write.key)
        if write.delete:
            if write.e_tag != ANY_E_TAG and current is not None and current.e_tag != write.e_tag:
                raise ETagConflictError(f"memory: {write.key!r} changed since it was read")
            return
        if write.e_tag is None and current is not None:
            raise ETagConflictError(f"memory: {write.key!r} was created by another writer")
        if write.e_tag not in (None, ANY_E_TAG) and (current is None or current.e_tag != write.e_tag):
            raise ETagConflictError(f"memory: {write.key!r} changed since it was read")

    async def _remove(self, key: str) -> None:
        self._records.pop(key, None)

    async def _move(self, key: str, new_key: str) -> bool:
        record = self._records.pop(key, None)
        if record is None:
            return False
        self._records[new_key] = record
        return True

    async def _remove_expired(self, now: int, limit: int) -> int:
        expired = [
            key
            for key, record in self._records.items()
            if (expires_at := expires_at_of(record.document)) is not None and expires_at <= now
        ][:limit]
        for key in expired:
            del self._records[key]
        return len(expired)

    async def _close(self) -> None:
        self._records.clear()

    def describe(self) -> str:
        return "memory (state is lost when the process stops)"
