"""Bot state in an Azure Cosmos DB for NoSQL container, through the async SDK (``azure.cosmos.aio``).

Item layout (compatible with botbuilder-azure's ``CosmosDbPartitionedStorage`` where it can be)::

    {"id": "<escaped key>", "realId": "<original key>", "document": {...the state as a JSON object...}}

* The container is partitioned on ``/id`` (botbuilder's default), so every key is its own logical partition
  and every operation is a cheap point operation.
* ``id`` is ``hosting.storage.keys.escape_cosmos_key(key)``: Cosmos forbids ``/ \\ ? #`` in ids and limits their length.
  ``realId`` keeps the key as the bot knows it; a read checks it, so two keys can never share an item unnoticed.
* ``document`` holds the state as a parsed JSON object (readable in the portal's Data Explorer), written from
  and read back into ``hosting.storage.codec`` text. botbuilder-azure writes jsonpickle output there instead.
* The e_tag is Cosmos's own ``_etag``. A concrete e_tag becomes ``If-Match`` on ``replace_item`` (412, or 404
  when the item is gone, is an ``ETagConflictError``); no e_tag is ``create_item`` (409 is a conflict); ``"*"``
  is ``upsert_item``.
* Only a 404 on a point read (without sub-status 1003) means "absent". Every other failure (any other status, a
  refused connection, a timeout) is a ``StorageError`` naming the backend, the operation and the key, with the SDK
  error chained.
* A missing container (404 with sub-status 1003) is re-created, with its database, by the call that finds it
  missing, at most once per ``HEAL_INTERVAL_S`` (this needs a key: Entra data-plane roles cannot create one).
* Time: ``connection_timeout`` / ``read_timeout`` client options (the SDK sends them with each request) and
  ``operation_timeout`` on each whole operation, the SDK's own retries included.
* Expiry: a record stamped with an expiry (``base.ExpiryPolicy``) is written with Cosmos's native per-item
  ``ttl``; containers this backend creates have TTL enabled (``defaultTtl: -1``). On a container made without
  it, expired items are still skipped on read and overwritten by the next write.
* Several keys in one ``write`` are written one by one in the order given (``atomic_writes`` is false:
  transactional batches span one logical partition, and with ``/id`` every key is its own).
* A write whose item would exceed Cosmos's 2 MB item limit is refused with ``RecordTooLargeError`` before any
  request is sent, and so is an integer Cosmos would silently round (it keeps numbers as IEEE doubles).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from azure.cosmos.http_constants import SubStatusCodes

from ._azure import (
    REAL_KEY,
    AzureStorage,
    direct_transport,
    open_credential,
    public_host,
    status_of,
    summarize,
    turn_friendly_options,
)
from .base import EXPIRES_AT, CorruptRecordError, ETagConflictError, RecordTooLargeError, StorageError, StoredRecord
from .keys import escape_cosmos_key

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


class CosmosTarget(Protocol):
    """Where the cosmos backend keeps its records (``registry.CosmosSettings`` is one)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def database(self) -> str: ...

    @property
    def container(self) -> str: ...


#: The id path every item is partitioned on (botbuilder-azure's default for new containers).
PARTITION_KEY_PATH = "/id"

#: Cosmos refuses items over 2 MB (measured as the UTF-8 length of their JSON). We refuse a little earlier: the
#: service adds system properties (``_rid``, ``_self``, ``_etag``, ``_ts``, ``_attachments``) to what we send,
#: and "2 MB" is 2,097,152 bytes in practice; 2,000,000 keeps clear of both under either reading.
MAX_ITEM_BYTES = 2_000_000

#: Cosmos stores every number as an IEEE 754 double, so integers beyond +/-2**53 would come back changed.
MAX_SAFE_INTEGER = 2**53 - 1


class UnsafeNumberError(StorageError):
    """The state holds an integer Cosmos DB cannot keep exactly. Nothing was sent or changed."""


def _check_numbers(value: Any, key: str) -> None:
    """Refuse integers outside +/-(2**53 - 1), which Cosmos would silently round on write."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, int) and not isinstance(current, bool) and abs(current) > MAX_SAFE_INTEGER:
            raise UnsafeNumberError(
                f"cosmos: cannot store {key!r}: the integer {current} is beyond +/-2**53-1 and Cosmos DB would "
                "round it; store it as a string instead"
            )


class CosmosStorage(AzureStorage[CosmosTarget]):
    """``StateStorage`` over one Cosmos DB container partitioned on ``/id``.

    Open one with ``CosmosStorage.open(settings)``: signs in with ``settings.key`` when set, otherwise with
    ``DefaultAzureCredential`` (managed identity, Azure CLI, ...). ``open`` also refuses an existing container
    that is not partitioned on ``/id``.
    """

    name = "cosmos"

    def __init__(
        self,
        client: CosmosClient,
        *,
        endpoint: str,
        database: str,
        container: str,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        """Use ``container`` of ``database`` through ``client``; this object owns ``client`` and ``credential``."""
        super().__init__(
            client,
            credential=credential,
            where=f"cosmos container {container!r} in database {database!r}",
            endpoint=public_host(endpoint),
            tls=endpoint.startswith("https:"),
        )
        self.database_id = database
        self.container_id = container
        self._container = client.get_database_client(database).get_container_client(container)

    @classmethod
    async def _connect(cls, settings: CosmosTarget, client_options: dict[str, Any]) -> Self:
        # The SDK sends the timeouts with each request; the transport gets them too, for anything else.
        options = {**turn_friendly_options(retry_total=2, transport=direct_transport()), **client_options}
        credential = None if settings.key else open_credential()
        client = CosmosClient(
            settings.endpoint,
            credential=settings.key or credential,
            enable_compact_utf8_item_writes=True,
            **options,
        )
        return cls(
            client,
            endpoint=settings.endpoint,
            database=settings.database,
            container=settings.container,
            credential=credential,
        )

    async def _prepare(self) -> None:
        """Create the database and the container when missing (the SDK reads each first), and refuse a container
        that is not partitioned on ``/id``."""
        try:
            properties = await self._create()
        except AzureError as err:
            hint = ""
            if self._credential is not None and status_of(err) == 403:
                hint = (
                    " (signed in with Entra ID: data-plane roles cannot create databases or containers, so create "
                    "them beforehand and grant the identity the 'Cosmos DB Built-in Data Contributor' role)"
                )
            raise StorageError(f"cannot open {self.describe()}: {summarize(err)}{hint}") from err
        paths = (properties.get("partitionKey") or {}).get("paths")
        if paths != [PARTITION_KEY_PATH]:
            raise StorageError(
                f"{self.describe()} is partitioned on {paths!r}, not [{PARTITION_KEY_PATH!r}]; point COSMOS_CONTAINER "
                f"at a container partitioned on {PARTITION_KEY_PATH}"
            )

    async def _create(self) -> dict[str, Any]:
        """The database and the container, each created when missing (needs a key: Entra data roles cannot);
        the container's properties."""
        database = await self._client.create_database_if_not_exists(id=self.database_id)
        _, properties = await database.create_container_if_not_exists(
            id=self.container_id,
            partition_key=PartitionKey(path=PARTITION_KEY_PATH),
            default_ttl=-1,  # per-item TTL on, no default: items without "ttl" live forever
            return_properties=True,
        )
        return properties

    def _is_missing(self, err: AzureError) -> bool:
        return status_of(err) == 404 and getattr(err, "sub_status", None) == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND

    # -- the contract's primitives -----------------------------------------------------------------------------

    async def _load(self, key: str) -> StoredRecord | None:
        item = await self._read(key, "read")
        return None if item is None else self._record(key, item)

    async def _insert(self, key: str, document: str) -> str:
        body = self._item(key, document)
        try:
            item = await self._container.create_item(body=body)
        except AzureError as err:
            if status_of(err) == 409:
                raise ETagConflictError(f"cosmos: {key!r} was created by another writer") from err
            raise self._fail("create", key, err) from err
        return self._e_tag_of(key, item)

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        body = self._item(key, document)
        try:
            item = await self._container.replace_item(
                item=body["id"], body=body, etag=e_tag, match_condition=MatchConditions.IfNotModified
            )
        except AzureError as err:
            if status_of(err) == 412 or self._absent(err):
                raise ETagConflictError(f"cosmos: {key!r} changed (or was deleted) since it was read") from err
            raise self._fail("replace", key, err) from err
        return self._e_tag_of(key, item)

    async def _upsert(self, key: str, document: str) -> str:
        body = self._item(key, document)
        try:
            item = await self._container.upsert_item(body=body)
        except AzureError as err:
            raise self._fail("upsert", key, err) from err
        return self._e_tag_of(key, item)

    async def _remove(self, key: str) -> None:
        item_id = escape_cosmos_key(key)
        try:
            await self._container.delete_item(item=item_id, partition_key=item_id)
        except AzureError as err:
            if not self._absent(err):
                raise self._fail("delete", key, err) from err

    async def _remove_if(self, key: str, e_tag: str) -> None:
        item_id = escape_cosmos_key(key)
        try:
            await self._container.delete_item(
                item=item_id, partition_key=item_id, etag=e_tag, match_condition=MatchConditions.IfNotModified
            )
        except AzureError as err:
            if status_of(err) == 412:
                raise ETagConflictError(f"cosmos: {key!r} changed since it was read, so it was not deleted") from err
            if not self._absent(err):
                raise self._fail("delete", key, err) from err

    async def _load_raw(self, key: str) -> str | None:
        item = await self._read(key, "read")
        if item is None:
            return None
        stored = {name: value for name, value in item.items() if not name.startswith("_")}
        return json.dumps(stored, ensure_ascii=False, separators=(",", ":"))

    async def _move(self, key: str, new_key: str) -> bool:
        item = await self._read(key, "move aside")
        if item is None:
            return False
        # The item as stored, minus the system properties Cosmos adds (and refuses on create).
        copy = {name: value for name, value in item.items() if not name.startswith("_")}
        copy["id"] = escape_cosmos_key(new_key)
        item_id = escape_cosmos_key(key)
        try:
            await self._container.create_item(body=copy)
            await self._container.delete_item(
                item=item_id,
                partition_key=item_id,
                etag=item.get("_etag"),
                match_condition=MatchConditions.IfNotModified,
            )
        except AzureError as err:
            if status_of(err) in (409, 412):
                raise ETagConflictError(f"cosmos: {key!r} changed while it was being moved aside") from err
            raise self._fail("move aside", key, err) from err
        return True

    # -- helpers -----------------------------------------------------------------------------------------------

    def _absent(self, err: AzureError) -> bool:
        """A 404 about the item itself (not its container): "absent"."""
        return status_of(err) == 404 and not self._is_missing(err)

    async def _read(self, key: str, action: str) -> dict[str, Any] | None:
        """The item of ``key`` as stored, or None when it does not exist."""
        item_id = escape_cosmos_key(key)
        try:
            return await self._container.read_item(item=item_id, partition_key=item_id)
        except AzureError as err:
            if self._absent(err):
                return None
            raise self._fail(action, key, err) from err

    def _check_record(self, key: str, document: str) -> None:
        self._item(key, document)

    def _item(self, key: str, document: str) -> dict[str, Any]:
        """The item to send for ``key``; refused before any request when Cosmos could not keep it as is."""
        parsed = json.loads(document)
        _check_numbers(parsed, key)
        body = {"id": escape_cosmos_key(key), REAL_KEY: key, "document": parsed}
        expires_at = parsed.get(EXPIRES_AT) if isinstance(parsed, dict) else None
        if isinstance(expires_at, int):
            # Native per-item TTL (seconds after the write): Cosmos deletes the item itself once it expires.
            body["ttl"] = max(1, expires_at - self._now_epoch())
        # The client sends item bodies as compact UTF-8 JSON (enable_compact_utf8_item_writes), so this is the
        # size that goes over the wire and that Cosmos checks.
        size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_ITEM_BYTES:
            raise RecordTooLargeError(
                f"cosmos: cannot store {key!r}: the item would be {size:,} bytes, over the {MAX_ITEM_BYTES:,} byte "
                "limit this backend keeps under Cosmos DB's 2 MB item size; keep less in this state"
            )
        return body

    def _record(self, key: str, item: Mapping[str, Any]) -> StoredRecord:
        real_id = item.get(REAL_KEY)
        document = item.get("document")
        e_tag = item.get("_etag")
        if real_id != key:
            raise CorruptRecordError(
                key,
                f"cosmos: the item {item.get('id')!r} read for {key!r} belongs to {real_id!r}; it was left untouched",
            )
        if not isinstance(document, dict) or not isinstance(e_tag, str) or not e_tag:
            raise CorruptRecordError(
                key,
                f"cosmos: the item for {key!r} has no JSON object in 'document' or no '_etag'; it was left untouched",
            )
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        return StoredRecord(text, e_tag)

    @staticmethod
    def _e_tag_of(key: str, item: Mapping[str, Any]) -> str:
        e_tag = item.get("_etag")
        if not isinstance(e_tag, str) or not e_tag:
            raise StorageError(f"cosmos: the write of {key!r} succeeded but the response carried no _etag")
        return e_tag
