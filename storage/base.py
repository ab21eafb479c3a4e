"""The storage contract every backend implements, and the errors it raises.

``StateStorage`` is a ``botbuilder.core.Storage`` (``read`` / ``write`` / ``delete`` of dicts keyed by string)
with the semantics the SDK leaves open pinned down:

* ``read`` returns fresh dicts: mutating one changes nothing until it is written back. Every item read carries
  the record's ``"e_tag"``.
* ``write`` honours the item's ``"e_tag"``:

  - a concrete e_tag replaces the record only if it still has that e_tag, otherwise ``ETagConflictError``;
  - ``"*"`` creates or overwrites unconditionally;
  - no e_tag means "this is new": the record is created, and if another writer created it in the meantime the
    write fails with ``ETagConflictError`` instead of silently overwriting it (the SDK's stores overwrite).

  After a successful write the item's ``"e_tag"`` is updated in place, so saving the same state again in one
  turn does not conflict with itself.
* ``delete`` of an absent key is not an error.
* Service failures surface as ``StorageError`` (with the cause chained), never as vendor exceptions, and a
  failed read never looks like "absent".

Backends implement five small primitives on serialized documents (``_load_many``, ``_insert``, ``_replace``,
``_upsert``, ``_remove``) plus ``ping`` and ``close``; everything above lives here once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import abstractmethod
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from botbuilder.core import Storage, StoreItem

from . import codec

logger = logging.getLogger(__name__)

E_TAG = "e_tag"
ANY_E_TAG = "*"


class StorageError(Exception):
    """The state store could not do what was asked. Nothing is known to have been changed."""


class ETagConflictError(StorageError):
    """A write lost a race: the record changed (or appeared) since it was read."""


class CorruptRecordError(StorageError):
    """A stored record exists but cannot be decoded. It is left untouched."""


class RecordTooLargeError(StorageError, ValueError):
    """The record is larger than the backend accepts. Refused before any call; nothing was changed."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as a backend keeps it: the JSON document text and its e_tag."""

    document: str
    e_tag: str


def new_e_tag() -> str:
    """A fresh e_tag for backends that do not generate their own."""
    return uuid.uuid4().hex


def _check_keys(keys: Iterable[str]) -> list[str]:
    unique: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"storage keys must be non-empty strings, got {key!r}")
        if key not in unique:
            unique.append(key)
    return unique


def _as_document(key: str, item: object) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, StoreItem):
        return dict(vars(item))
    raise TypeError(f"cannot store {type(item).__name__} under {key!r}: expected a dict or StoreItem")


class StateStorage(Storage):
    """Base class of every backend; see the module docstring for the contract."""

    #: Short backend name for logs and /readyz ("sqlite", "memory", ...).
    name: str = "storage"

    async def read(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        unique = _check_keys(keys or [])
        if not unique:
            return {}
        records = await self._load_many(unique)
        items: dict[str, dict[str, Any]] = {}
        for key, record in records.items():
            try:
                document = codec.loads(record.document)
            except ValueError as err:
                raise CorruptRecordError(f"{self.name}: the stored record {key!r} cannot be decoded: {err}") from err
            document[E_TAG] = record.e_tag
            items[key] = document
        return items

    async def write(self, changes: Mapping[str, object]) -> None:
        if changes is None:
            raise TypeError("write() needs a mapping of changes")
        for key in _check_keys(changes.keys()):
            item = changes[key]
            document = _as_document(key, item)
            e_tag = document.pop(E_TAG, None)
            text = codec.dumps(document)
            if e_tag is None:
                new_tag = await self._insert(key, text)
            elif e_tag == ANY_E_TAG:
                new_tag = await self._upsert(key, text)
            elif isinstance(e_tag, str) and e_tag:
                new_tag = await self._replace(key, text, e_tag)
            else:
                raise ValueError(f"invalid e_tag {e_tag!r} for {key!r}: use a stored e_tag, '*' or none")
            if isinstance(item, MutableMapping):
                item[E_TAG] = new_tag
            elif isinstance(item, StoreItem):
                item.e_tag = new_tag

    async def delete(self, keys: list[str]) -> None:
        for key in _check_keys(keys or []):
            await self._remove(key)

    # -- what a backend provides -------------------------------------------------------------------------------

    async def _load_many(self, keys: list[str]) -> dict[str, StoredRecord]:
        """Fetch the records that exist among ``keys``. Absent keys are left out; failures raise."""
        records = await asyncio.gather(*(self._load(key) for key in keys))
        return {key: record for key, record in zip(keys, records, strict=True) if record is not None}

    async def _load(self, key: str) -> StoredRecord | None:
        raise NotImplementedError

    @abstractmethod
    async def _insert(self, key: str, document: str) -> str:
        """Create ``key``; raise ``ETagConflictError`` if it exists. Return the new e_tag."""

    @abstractmethod
    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        """Overwrite ``key`` if its e_tag is still ``e_tag``, else ``ETagConflictError`` (also when absent)."""

    @abstractmethod
    async def _upsert(self, key: str, document: str) -> str:
        """Create or overwrite ``key`` unconditionally. Return the new e_tag."""

    @abstractmethod
    async def _remove(self, key: str) -> None:
        """Delete ``key``; absent is fine."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StorageError`` unless the store answers right now."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and clients. Idempotent."""

    def describe(self) -> str:
        """Where the state lives, for the start-up log. Never includes secrets."""
        return self.name
