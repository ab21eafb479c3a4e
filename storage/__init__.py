"""State storage: one module per backend behind the ``StateStorage`` contract, chosen by ``build_storage``.

The backends, their settings and how each is opened are declared in ``storage/registry.py``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Settings

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
    "build_storage",
    "damaged_key",
    "storage_deadline",
    "storage_deadline_now",
]

# Loaded on first use (PEP 562), so that ``config`` can import ``storage.registry`` without the storage contract
# and botbuilder behind it: ``import config`` stays ~40 ms instead of ~600 ms (gunicorn's master imports it).
_EXPORTED_FROM = {
    "CorruptRecordError": ".base",
    "Delete": ".base",
    "ETagConflictError": ".base",
    "ExpiryPolicy": ".base",
    "RecordTooLargeError": ".base",
    "StateStorage": ".base",
    "StorageError": ".base",
    "damaged_key": ".base",
    "storage_deadline": ".base",
    "storage_deadline_now": ".base",
    "MemoryStateStorage": ".memory",
    "SqliteStorage": ".sqlite",
}


def __getattr__(name: str) -> object:
    module = _EXPORTED_FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


async def build_storage(settings: Settings, expiry: ExpiryPolicy | None = None) -> StateStorage:
    """Open the backend ``settings.store`` describes, with ``expiry`` (None: records never expire).

    The backends and their settings are declared in ``storage/registry.py``. The caller owns the store and must
    ``close()`` it.
    """
    storage = await settings.store.open()
    storage.expiry = expiry
    return storage
