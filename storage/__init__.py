"""State storage: one module per backend behind the ``StateStorage`` contract, chosen by ``build_storage``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
    "OPENERS",
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


async def _open_memory(settings: Settings) -> StateStorage:
    return MemoryStateStorage()


async def _open_sqlite(settings: Settings) -> StateStorage:
    return await SqliteStorage.open(settings.sqlite_path)


async def _open_blob(settings: Settings) -> StateStorage:
    from .blob import open_blob_storage  # the Azure backends import their SDKs only when chosen

    return await open_blob_storage(settings)


async def _open_table(settings: Settings) -> StateStorage:
    from .table import open_table_storage

    return await open_table_storage(settings)


async def _open_cosmos(settings: Settings) -> StateStorage:
    from .cosmos import open_cosmos_storage

    return await open_cosmos_storage(settings)


#: Every backend and how to open it; its settings are checked in config.py (``STORAGE_CHECKS``), and the contract
#: suite opens it through tests/backends.py. tests/test_config.py keeps the three in step.
OPENERS: dict[str, Callable[[Settings], Awaitable[StateStorage]]] = {
    "sqlite": _open_sqlite,
    "memory": _open_memory,
    "blob": _open_blob,
    "table": _open_table,
    "cosmos": _open_cosmos,
}


async def _open_backend(settings: Settings) -> StateStorage:
    try:
        opener = OPENERS[settings.storage]
    except KeyError:
        raise ValueError(f"unknown storage backend {settings.storage!r}") from None
    return await opener(settings)
