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
* Only a 404 on a point read means "absent". Every other failure (any other status, a refused connection, a
  timeout) is a ``StorageError`` naming the backend, the operation and the key, with the SDK error chained.
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
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from azure.cosmos.http_constants import SubStatusCodes

from ._azure import (
    OPERATION_TIMEOUT_S,
    Healer,
    close_credential,
    close_quietly,
    direct_transport,
    open_credential,
    public_host,
    turn_friendly_options,
)
from .base import (
    EXPIRES_AT,
    CorruptRecordError,
    ETagConflictError,
    RecordTooLargeError,
    StateStorage,
    StorageError,
    StoredRecord,
)
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


logger = logging.getLogger(__name__)

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


class CosmosStorage(StateStorage):
    """``StateStorage`` over one Cosmos DB container partitioned on ``/id``. Open one with :meth:`open`."""

    name = "cosmos"
    operation_timeout = OPERATION_TIMEOUT_S

    def __init__(
        self,
        container: ContainerProxy,
        client: CosmosClient,
        *,
        endpoint: str,
        credential: AsyncTokenCredential | None = None,
        database: DatabaseProxy | None = None,
    ) -> None:
        """Wrap a ready container; this object owns ``client`` and ``credential`` and closes them. See :meth:`open`."""
        self._container = container
        self._client = client
        self._credential = credential
        self._endpoint = endpoint
        self._healer = Healer(self._recreate_container, "", self.describe(), is_missing=_is_missing_container)
        self._database = database

    @classmethod
    async def open(cls, settings: CosmosTarget, **client_options: Any) -> Self:
        """Connect to ``settings.endpoint`` and make sure the database and container exist.

        Signs in with ``settings.key`` when set, otherwise with ``DefaultAzureCredential`` (managed
        identity, Azure CLI, ...). ``client_options`` go to ``CosmosClient`` as keyword arguments (tests use them
        for TLS verification and retry limits). Raises ``StorageError`` if the account cannot be reached, or if an
        existing container is not partitioned on ``/id``.
        """
        credential = None if settings.key else open_credential()
        client = CosmosClient(
            settings.endpoint,
            credential=settings.key or credential,
            enable_compact_utf8_item_writes=True,
            **client_options,
        )
        where = f"{public_host(settings.endpoint)}, database {settings.database!r}"
        try:
            database = await client.create_database_if_not_exists(id=settings.database)
            container, properties = await database.create_container_if_not_exists(
                id=settings.container,
                partition_key=PartitionKey(path=PARTITION_KEY_PATH),
                default_ttl=-1,  # per-item TTL on, no default: items without "ttl" live forever
                return_properties=True,
            )
        except AzureError as err:
            await close_quietly("cosmos", client, credential)
            first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
            hint = ""
            if credential is not None and isinstance(err, CosmosHttpResponseError) and err.status_code == 403:
                hint = (
                    " (signed in with Entra ID: data-plane roles cannot create databases or containers, so create "
                    "them beforehand and grant the identity the 'Cosmos DB Built-in Data Contributor' role)"
                )
            raise StorageError(
                f"cosmos: cannot open container {settings.container!r} at {where}: {first_line}{hint}"
            ) from err
        except BaseException:
            await close_quietly("cosmos", client, credential)
            raise
        paths = (properties.get("partitionKey") or {}).get("paths")
        if paths != [PARTITION_KEY_PATH]:
            await close_quietly("cosmos", client, credential)
            raise StorageError(
                f"cosmos: container {settings.container!r} at {where} is partitioned on {paths!r}, not "
                f"[{PARTITION_KEY_PATH!r}]; point COSMOS_CONTAINER at a container partitioned on {PARTITION_KEY_PATH}"
            )
        return cls(container, client, endpoint=settings.endpoint, credential=credential, database=database)

    @property
    def database_id(self) -> str:
        return self._container.database_link.removeprefix("dbs/")

    @property
    def container_id(self) -> str:
        return str(self._container.id)

    # -- the contract's primitives -----------------------------------------------------------------------------

    async def _load(self, key: str) -> StoredRecord | None:
        item_id = escape_cosmos_key(key)
        try:
            item = await self._container.read_item(item=item_id, partition_key=item_id)
        except CosmosResourceNotFoundError as err:
            if err.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND:
                raise self._error("read", key, err, "the container does not exist") from err
            return None
        except AzureError as err:
            raise self._error("read", key, err) from err
        return self._record(key, item)

    async def _insert(self, key: str, document: str) -> str:
        body = self._item(key, document)
        try:
            item = await self._container.create_item(body=body)
        except CosmosResourceExistsError as err:
            raise ETagConflictError(f"cosmos: {key!r} was created by another writer") from err
        except AzureError as err:
            raise self._error("create", key, err) from err
        return self._e_tag_of(key, item)

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        body = self._item(key, document)
        try:
            item = await self._container.replace_item(
                item=body["id"], body=body, etag=e_tag, match_condition=MatchConditions.IfNotModified
            )
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError) as err:
            if err.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND:
                raise self._error("replace", key, err, "the container does not exist") from err
            raise ETagConflictError(f"cosmos: {key!r} changed (or was deleted) since it was read") from err
        except AzureError as err:
            raise self._error("replace", key, err) from err
        return self._e_tag_of(key, item)

    async def _upsert(self, key: str, document: str) -> str:
        body = self._item(key, document)
        try:
            item = await self._container.upsert_item(body=body)
        except AzureError as err:
            raise self._error("upsert", key, err) from err
        return self._e_tag_of(key, item)

    async def _remove(self, key: str) -> None:
        item_id = escape_cosmos_key(key)
        try:
            await self._container.delete_item(item=item_id, partition_key=item_id)
        except CosmosResourceNotFoundError as err:
            if err.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND:
                raise self._error("delete", key, err, "the container does not exist") from err
            logger.debug("cosmos: delete of absent key %r ignored", key)
        except AzureError as err:
            raise self._error("delete", key, err) from err

    async def _remove_if(self, key: str, e_tag: str) -> None:
        item_id = escape_cosmos_key(key)
        try:
            await self._container.delete_item(
                item=item_id, partition_key=item_id, etag=e_tag, match_condition=MatchConditions.IfNotModified
            )
        except CosmosAccessConditionFailedError as err:
            raise ETagConflictError(f"cosmos: {key!r} changed since it was read, so it was not deleted") from err
        except CosmosResourceNotFoundError as err:
            if err.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND:
                raise self._error("delete", key, err, "the container does not exist") from err
        except AzureError as err:
            raise self._error("delete", key, err) from err

    async def _load_raw(self, key: str) -> str | None:
        item_id = escape_cosmos_key(key)
        try:
            item = await self._container.read_item(item=item_id, partition_key=item_id)
        except CosmosResourceNotFoundError as err:
            if err.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND:
                raise self._error("read", key, err, "the container does not exist") from err
            return None
        except AzureError as err:
            raise self._error("read", key, err) from err
        stored = {name: value for name, value in item.items() if not name.startswith("_")}
        return json.dumps(stored, ensure_ascii=False, separators=(",", ":"))

    async def _move(self, key: str, new_key: str) -> bool:
        item_id = escape_cosmos_key(key)
        try:
            item = await self._container.read_item(item=item_id, partition_key=item_id)
        except CosmosResourceNotFoundError as err:
            if err.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND:
                raise self._error("move aside", key, err, "the container does not exist") from err
            return False
        except AzureError as err:
            raise self._error("move aside", key, err) from err
        # The item as stored, minus the system properties Cosmos adds (and refuses on create).
        copy = {name: value for name, value in item.items() if not name.startswith("_")}
        copy["id"] = escape_cosmos_key(new_key)
        try:
            await self._container.create_item(body=copy)
            await self._container.delete_item(
                item=item_id,
                partition_key=item_id,
                etag=item.get("_etag"),
                match_condition=MatchConditions.IfNotModified,
            )
        except (CosmosAccessConditionFailedError, CosmosResourceExistsError) as err:
            raise ETagConflictError(f"cosmos: {key!r} changed while it was being moved aside") from err
        except AzureError as err:
            raise self._error("move aside", key, err) from err
        return True

    async def _ping(self) -> None:
        """Read the container's properties: one cheap metadata request."""
        try:
            await self._container.read()
        except AzureError as err:
            raise StorageError(f"cosmos ping failed on {self.describe()}: {err}") from err

    async def _heal(self, err: StorageError) -> bool:
        return await self._healer.heal(err)

    async def _recreate_container(self) -> None:
        """The database and container again, as ``open`` makes them (needs a key: Entra data roles cannot)."""
        if self._database is None:
            raise StorageError(f"cosmos: {self.describe()} has no database handle to re-create the container in")
        database = await self._client.create_database_if_not_exists(id=self._database.id)
        await database.create_container_if_not_exists(
            id=self.container_id, partition_key=PartitionKey(path=PARTITION_KEY_PATH), default_ttl=-1
        )

    async def _close(self) -> None:
        try:
            await self._client.close()
        finally:
            await close_credential(self._credential)

    def describe(self) -> str:
        return (
            f"cosmos at {public_host(self._endpoint)}, database {self.database_id!r}, container {self.container_id!r}"
        )

    # -- helpers -----------------------------------------------------------------------------------------------

    def _check_record(self, key: str, document: str) -> None:
        self._item(key, document)

    def _item(self, key: str, document: str) -> dict[str, Any]:
        """The item to send for ``key``; refused before any request when Cosmos could not keep it as is."""
        parsed = json.loads(document)
        _check_numbers(parsed, key)
        body = {"id": escape_cosmos_key(key), "realId": key, "document": parsed}
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
        real_id = item.get("realId")
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

    def _error(self, action: str, key: str, err: AzureError, detail: str | None = None) -> StorageError:
        status = err.status_code if isinstance(err, CosmosHttpResponseError) else None
        cause = detail or (f"HTTP {status}" if status else type(err).__name__)
        summary = str(err).splitlines()[0] if str(err) else ""
        return StorageError(f"cosmos {action} of {key!r} failed on {self.describe()}: {cause}: {summary}")


def _is_missing_container(cause: BaseException) -> bool:
    return (
        isinstance(cause, CosmosResourceNotFoundError) and cause.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND
    )


async def open_cosmos_storage(settings: CosmosTarget, **client_options: Any) -> CosmosStorage:
    """Open the Cosmos DB backend ``settings`` describe; see :meth:`CosmosStorage.open`.

    ``client_options`` go to ``CosmosClient`` over ``turn_friendly_options`` (the SDK sends the timeouts with each
    request; the transport gets them too, for anything else).
    """
    options = turn_friendly_options(retry_total=2, transport=direct_transport())
    return await CosmosStorage.open(settings, **{**options, **client_options})
