"""State storage: one module per backend behind the ``StateStorage`` contract, chosen by ``build_storage``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    CorruptRecordError,
    ETagConflictError,
    ExpiryPolicy,
    RecordTooLargeError,
    StateStorage,
    StorageError,
)
from .memory import MemoryStateStorage
from .sqlite import SqliteStorage

if TYPE_CHECKING:
    from config import Settings

__all__ = [
    "CorruptRecordError",
    "ETagConflictError",
    "ExpiryPolicy",
    "MemoryStateStorage",
    "RecordTooLargeError",
    "SqliteStorage",
    "StateStorage",
    "StorageError",
    "build_storage",
]


async def build_storage(settings: Settings, expiry: ExpiryPolicy | None = None) -> StateStorage:
    """Open the backend that ``settings.storage`` names, with ``expiry`` (None: records never expire).

    The caller owns the store and must ``close()`` it.
    """
    storage = await _open_backend(settings)
    storage.expiry = expiry
    return storage


async def _open_backend(settings: Settings) -> StateStorage:
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
