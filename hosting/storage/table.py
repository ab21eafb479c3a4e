"""Azure Table Storage backend: one entity per key in one table.

Layout
------
* ``PartitionKey``: :func:`hosting.storage.keys.escape_table_key` of the key, so every key is its own partition (point
  reads and writes, no hot partition); ``RowKey``: ``""``.
* ``realId``: the original key. ``document_0``, ``document_1``, ...: the JSON document text, cut into pieces of
  at most 32,768 UTF-16 code units (a string property holds at most 64 KiB), joined in order on read.
* e_tag: the entity's ETag as the service returns it.

A whole entity holds at most 1 MiB (counted as the service counts: 2 bytes per UTF-16 code unit plus per-property
overhead), so a document of up to about 520,000 characters fits. A larger one is refused with
``RecordTooLargeError`` (a ``StorageError`` and a ``ValueError``) before any call, and nothing is written.

Not compatible with botbuilder-js's ``TableStorage`` (one row per 32K chunk, ``%``-escaped keys, a ``Json``
property): the one-entity layout makes every write a single atomic, ETag-checked operation.

Semantics (see ``hosting.storage.base``)
--------------------------------
* create-only write: ``create_entity``; 409 ``EntityAlreadyExists`` -> ``ETagConflictError``;
* conditional write: ``update_entity(mode=REPLACE, If-Match)``; 412 or 404 (the entity is gone) ->
  ``ETagConflictError``;
* ``*`` write: ``upsert_entity(mode=REPLACE)``; read of a missing entity -> absent; delete of a missing one is fine;
* anything else (a 403, a 500, a missing table, no answer at all) -> ``StorageError`` naming the key, chained.
  A missing table (deleted, or an emulator restarted empty) is re-created by the call that finds it missing, at
  most once per ``HEAL_INTERVAL_S``, and that call is tried once more.
* Time: timeouts on the transport and ``operation_timeout`` on the whole operation; see ``hosting.storage._azure``.
* Several keys in one ``write`` are written one by one in the order given (``atomic_writes`` is false: every key is
  its own partition, and entity group transactions only span one partition).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol, Self

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from ._azure import (
    REAL_KEY,
    AzureAccount,
    AzureStorage,
    error_code_of,
    open_client,
    public_url,
    status_of,
    turn_friendly_options,
)
from .base import CorruptRecordError, ETagConflictError, RecordTooLargeError, StoredRecord
from .keys import ESCAPE_CHAR, escape_table_key, utf16_units

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


class TableTarget(AzureAccount, Protocol):
    """Where the table backend keeps its records (``registry.TableSettings`` is one)."""

    @property
    def table(self) -> str: ...


ROW_KEY = ""
DOCUMENT_PREFIX = "document_"
#: Largest string property: 64 KiB of UTF-16.
MAX_PROPERTY_UNITS = 32 * 1024
#: Largest entity, as the service counts it.
MAX_ENTITY_BYTES = 1024 * 1024
#: A PartitionKey no escaped key can have ("*p" is not an escape), read by ``_probe``.
PROBE_PARTITION_KEY = ESCAPE_CHAR + "ping"


def split_document(document: str, max_units: int = MAX_PROPERTY_UNITS) -> list[str]:
    """Cut ``document`` into pieces of at most ``max_units`` UTF-16 code units, never inside a character."""
    if document.isascii() or max(document) <= "\uffff":
        return [document[start : start + max_units] for start in range(0, len(document), max_units)] or [""]
    pieces: list[str] = []
    start = used = 0
    for index, char in enumerate(document):
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > max_units:
            pieces.append(document[start:index])
            start, used = index, 0
        used += size
    pieces.append(document[start:])
    return pieces


def entity_size(entity: dict[str, str]) -> int:
    """Bytes the service counts for an entity of string properties (its documented formula)."""
    size = 4
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            size += 2 * utf16_units(value)
        else:
            size += 8 + 2 * len(name) + 4 + 2 * utf16_units(value)
    return size


def _absent(err: AzureError) -> bool:
    return status_of(err) == 404 and error_code_of(err) == "ResourceNotFound"


class TableStorage(AzureStorage[TableTarget]):
    """State in one table. Takes a ready ``TableClient`` and owns it (and ``credential``).

    Open one with ``TableStorage.open(settings)``: ``AZURE_STORAGE_CONNECTION_STRING`` when set, else
    ``AZURE_STORAGE_ACCOUNT_URL`` (the account's table endpoint, ``https://<account>.table.core.windows.net``) with
    ``DefaultAzureCredential``.
    """

    name = "table"

    def __init__(self, table: TableClient, *, credential: AsyncTokenCredential | None = None) -> None:
        super().__init__(
            table,
            credential=credential,
            where=f"table {table.table_name!r} in storage account {table.account_name!r}",
            endpoint=public_url(table.url),
        )
        self._table = table

    @classmethod
    async def _connect(cls, settings: TableTarget, client_options: dict[str, Any]) -> Self:
        options = {**turn_friendly_options(retry_total=2, retry_backoff_factor=0.4), **client_options}
        table, credential = await open_client(settings, "table", TableClient, settings.table, options)
        return cls(table, credential=credential)

    async def _probe(self) -> object:
        """A point read of an entity that never exists: cheap, and it needs only read access."""
        try:
            return await self._table.get_entity(PROBE_PARTITION_KEY, ROW_KEY)
        except AzureError as err:
            if _absent(err):
                return None  # the table answered
            raise

    async def _create(self) -> object:
        return await self._table.create_table()

    def _is_missing(self, err: AzureError) -> bool:
        return status_of(err) == 404 and error_code_of(err) == "TableNotFound"

    async def _load(self, key: str) -> StoredRecord | None:
        entity = await self._get(key, "read")
        return None if entity is None else StoredRecord(self._document_of(key, entity), str(entity.metadata["etag"]))

    async def _insert(self, key: str, document: str) -> str:
        entity = self._entity(key, document)
        try:
            # Without the preference the service echoes the whole entity (up to 1 MiB) back.
            result = await self._table.create_entity(entity, response_preference="return-no-content")
        except AzureError as err:
            if status_of(err) == 409 and error_code_of(err) == "EntityAlreadyExists":
                raise ETagConflictError(f"table: {key!r} was created by another writer") from err
            raise self._fail("create", key, err) from err
        return str(result["etag"])

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        entity = self._entity(key, document)
        try:
            result = await self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=e_tag, match_condition=MatchConditions.IfNotModified
            )
        except AzureError as err:
            if status_of(err) == 412 or _absent(err):
                raise ETagConflictError(f"table: {key!r} changed or was deleted since it was read") from err
            raise self._fail("write", key, err) from err
        return str(result["etag"])

    async def _upsert(self, key: str, document: str) -> str:
        entity = self._entity(key, document)
        try:
            result = await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except AzureError as err:
            raise self._fail("write", key, err) from err
        return str(result["etag"])

    async def _remove(self, key: str) -> None:
        partition_key = self._partition_key(key)
        try:
            # The SDK itself treats 404 on delete as success.
            await self._table.delete_entity(partition_key, ROW_KEY)
        except AzureError as err:
            raise self._fail("delete", key, err) from err

    async def _remove_if(self, key: str, e_tag: str) -> None:
        partition_key = self._partition_key(key)
        try:
            # A missing entity is success here too (the SDK treats 404 on delete as success).
            await self._table.delete_entity(
                partition_key, ROW_KEY, etag=e_tag, match_condition=MatchConditions.IfNotModified
            )
        except AzureError as err:
            if status_of(err) == 412:
                raise ETagConflictError(f"table: {key!r} changed since it was read, so it was not deleted") from err
            raise self._fail("delete", key, err) from err

    async def _load_raw(self, key: str) -> str | None:
        entity = await self._get(key, "read")
        return None if entity is None else json.dumps(dict(entity), ensure_ascii=False, default=str)

    async def _move(self, key: str, new_key: str) -> bool:
        entity = await self._get(key, "move aside")
        if entity is None:
            return False
        copy = {**entity, "PartitionKey": self._partition_key(new_key), "RowKey": ROW_KEY}
        try:
            await self._table.create_entity(copy, response_preference="return-no-content")
            await self._table.delete_entity(
                self._partition_key(key),
                ROW_KEY,
                etag=entity.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except AzureError as err:
            if status_of(err) in (409, 412):
                raise ETagConflictError(f"table: {key!r} changed while it was being moved aside") from err
            raise self._fail("move aside", key, err) from err
        return True

    # -- helpers -----------------------------------------------------------------------------------------------

    async def _get(self, key: str, action: str) -> TableEntity | None:
        """The entity of ``key``, or None when it does not exist."""
        try:
            return await self._table.get_entity(self._partition_key(key), ROW_KEY)
        except AzureError as err:
            if _absent(err):
                return None
            raise self._fail(action, key, err) from err

    def _partition_key(self, key: str) -> str:
        self._check_open()
        return escape_table_key(key)

    def _check_record(self, key: str, document: str) -> None:
        self._entity(key, document)

    def _entity(self, key: str, document: str) -> dict[str, str]:
        """The entity for ``key``; ``RecordTooLargeError`` if the service would refuse it."""
        entity = {"PartitionKey": self._partition_key(key), "RowKey": ROW_KEY, REAL_KEY: key}
        if utf16_units(key) > MAX_PROPERTY_UNITS:
            raise RecordTooLargeError(f"table: the key {key[:80]!r}... is longer than a table property can hold")
        for index, piece in enumerate(split_document(document)):
            entity[f"{DOCUMENT_PREFIX}{index}"] = piece
        size = entity_size(entity)
        if size > MAX_ENTITY_BYTES:
            raise RecordTooLargeError(
                f"table: the record {key!r} needs {size:,} bytes, more than the {MAX_ENTITY_BYTES:,} an entity "
                "can hold; nothing was written"
            )
        return entity

    def _document_of(self, key: str, entity: Any) -> str:
        if entity.get(REAL_KEY) != key:
            raise CorruptRecordError(
                key, f"table: the entity for {key!r} holds the record of {entity.get(REAL_KEY)!r}; left untouched"
            )
        pieces: list[str] = []
        while (piece := entity.get(f"{DOCUMENT_PREFIX}{len(pieces)}")) is not None:
            if not isinstance(piece, str):
                raise CorruptRecordError(
                    key, f"table: the entity for {key!r} has a non-text {DOCUMENT_PREFIX}{len(pieces)}"
                )
            pieces.append(piece)
        if not pieces:
            raise CorruptRecordError(key, f"table: the entity for {key!r} has no {DOCUMENT_PREFIX}0 property")
        return "".join(pieces)
