"""State storage: one module per backend behind the ``StateStorage`` contract, chosen by ``build_storage``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import CorruptRecordError, ETagConflictError, RecordTooLargeError, StateStorage, StorageError
from .memory import MemoryStateStorage
from .sqlite import SqliteStorage

if TYPE_CHECKING:
    from config import Settings

__all__ = [
    "CorruptRecordError",
    "ETagConflictError",
    "MemoryStateStorage",
    "RecordTooLargeError",
    "SqliteStorage",
    "StateStorage",
    "StorageError",
    "build_storage",
]


async def build_storage(settings: Settings) -> StateStorage:
    """Open the backend that ``settings.storage`` names. The caller owns it and must ``close()`` it."""
    if settings.storage == "memory":
        return MemoryStateStorage()
    if settings.storage == "sqlite":
        return await SqliteStorage.open(settings.sqlite_path)
    # The Azure backends import their SDKs only when chosen.
    if settings.storage == "blob":
        from .blob import open_blob_storage

        return await open_blob_storage(settings)
    if settings.storage == "table":
        from .table import open_table_storage

        return await open_table_storage(settings)
    if settings.storage == "cosmos":
        from .cosmos import open_cosmos_storage

        return await open_cosmos_storage(settings)
    raise ValueError(f"unknown storage backend {settings.storage!r}")
