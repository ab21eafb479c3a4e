"""State storage: one module per backend behind the ``StateStorage`` contract, chosen by ``build_storage``.

The backends, their settings and how each is opened are declared in ``storage/registry.py``.
"""

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
    """Open the backend ``settings.store`` describes, with ``expiry`` (None: records never expire).

    The backends and their settings are declared in ``storage/registry.py``. The caller owns the store and must
    ``close()`` it.
    """
    storage = await settings.store.open()
    storage.expiry = expiry
    return storage
