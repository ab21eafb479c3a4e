"""State storage: one module per backend behind the ``StateStorage`` contract (``base.py``), chosen by
``build_storage``. The backends, their settings and how each is opened are declared in ``registry.py``; a
backend's module (and its SDK) is imported only when that backend is opened; memory and sqlite, which need
no SDK, are exported here.
"""

from __future__ import annotations

from .base import (
    CorruptRecordError,
    Delete,
    ETagConflictError,
    ExpiryPolicy,
    RecordTooLargeError,
    StateStorage,
    StorageError,
    damaged_key,
    storage_deadline,
    storage_deadline_now,
)
from .memory import MemoryStateStorage
from .registry import StoreSettings
from .sqlite import SqliteStorage

__all__ = [
    "CorruptRecordError",
    "Delete",
    "ETagConflictError",
    "ExpiryPolicy",
    "MemoryStateStorage",
    "RecordTooLargeError",
    "SqliteStorage",
    "StateStorage",
    "StorageError",
    "StoreSettings",
    "build_storage",
    "damaged_key",
    "storage_deadline",
    "storage_deadline_now",
]


async def build_storage(store: StoreSettings, expiry: ExpiryPolicy | None = None) -> StateStorage:
    """Open the backend ``store`` describes, with ``expiry`` (None: records never expire).

    The caller owns the store and must ``close()`` it.
    """
    storage = await store.open()
    storage.expiry = expiry
    return storage
