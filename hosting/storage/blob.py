"""Azure Blob Storage backend: one JSON blob per key in one container.

Layout
------
* Blob name: :func:`hosting.storage.keys.escape_blob_name` of the key. Ordinary keys keep their ``/`` paths
  (``emulator/users/u1``), the same name Python botbuilder-azure's ``BlobStorage`` uses; see ``hosting.storage.keys``.
* Content (UTF-8 JSON, ``application/json``): ``{"id": <blob name>, "realId": <key>, "document": <state>}``,
  the envelope botbuilder-js's ``BlobStorage`` writes. ``realId`` is checked on read, so a blob that holds
  another key's record is reported as corrupt instead of being handed out.
* e_tag: the blob's ETag, as the service returns it (quotes included).

Semantics (see ``hosting.storage.base``)
--------------------------------
* create-only write: upload with ``If-None-Match: *``; 409/412 -> ``ETagConflictError``;
* conditional write: upload with ``If-Match: <e_tag>``; 412 (changed or deleted) -> ``ETagConflictError``;
* ``*`` write: unconditional upload; read of a missing blob -> absent; delete of a missing blob -> fine;
* anything else (a 403, a 500, a missing container, no answer at all) -> ``StorageError`` naming the key,
  with the SDK's error chained. A missing container (deleted, or an emulator restarted empty) is re-created by
  the call that finds it missing, at most once per ``HEAL_INTERVAL_S``, and that call is tried once more.
* Time: connect and per-read timeouts on the transport (``CONNECT_TIMEOUT_S`` / ``READ_TIMEOUT_S``), a short
  linear retry, and ``operation_timeout`` on the whole operation; see ``hosting.storage._azure``.
* Several keys in one ``write`` are written one by one in the order given (``atomic_writes`` is false: blobs
  have no cross-blob transaction).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol, Self

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobClient, ContainerClient, LinearRetry, StorageStreamDownloader

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
from .base import CorruptRecordError, ETagConflictError, StoredRecord
from .keys import escape_blob_name

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


class BlobTarget(AzureAccount, Protocol):
    """Where the blob backend keeps its records (``registry.BlobSettings`` is one)."""

    @property
    def container(self) -> str: ...


BLOB_CLIENT_CACHE_SIZE = 1024
_CONTENT_SETTINGS = ContentSettings(content_type="application/json; charset=utf-8")


def _envelope(name: str, key: str, document: str) -> bytes:
    head = json.dumps({"id": name, REAL_KEY: key}, ensure_ascii=False, separators=(",", ":"))
    return f'{head[:-1]},"document":{document}}}'.encode()


def _absent(err: AzureError) -> bool:
    return status_of(err) == 404 and error_code_of(err) == "BlobNotFound"


class BlobStorage(AzureStorage[BlobTarget]):
    """State in one blob container. Takes a ready ``ContainerClient`` and owns it (and ``credential``).

    Open one with ``BlobStorage.open(settings)``: ``AZURE_STORAGE_CONNECTION_STRING`` when set, else
    ``AZURE_STORAGE_ACCOUNT_URL`` (the account's blob endpoint, ``https://<account>.blob.core.windows.net``) with
    ``DefaultAzureCredential``.
    """

    name = "blob"

    def __init__(self, container: ContainerClient, *, credential: AsyncTokenCredential | None = None) -> None:
        super().__init__(
            container,
            credential=credential,
            where=f"blob container {container.container_name!r} in storage account {container.account_name!r}",
            endpoint=public_url(container.url),
        )
        self._container = container
        # Building a BlobClient costs more CPU than the request it makes; active conversations reuse theirs.
        self._blobs: OrderedDict[str, BlobClient] = OrderedDict()

    @classmethod
    async def _connect(cls, settings: BlobTarget, client_options: dict[str, Any]) -> Self:
        # A short linear retry instead of the SDK's exponential one (15 s, 24 s, 42 s).
        retry = LinearRetry(backoff=0.5, random_jitter_range=0.2, retry_total=2)
        options = {**turn_friendly_options(retry_policy=retry), **client_options}
        container, credential = await open_client(settings, "blob", ContainerClient, settings.container, options)
        return cls(container, credential=credential)

    async def _probe(self) -> object:
        return await self._container.get_container_properties()

    async def _create(self) -> object:
        return await self._container.create_container()

    def _is_missing(self, err: AzureError) -> bool:
        return status_of(err) == 404 and error_code_of(err) == "ContainerNotFound"

    async def _load(self, key: str) -> StoredRecord | None:
        name = self._blob_name(key)
        found = await self._download(name, key, "read")
        if found is None:
            return None
        download, content = found
        return StoredRecord(self._unwrap(name, key, content), str(download.properties.etag))

    async def _insert(self, key: str, document: str) -> str:
        try:
            return await self._upload(key, document, overwrite=False)
        except AzureError as err:
            if status_of(err) in (409, 412) and error_code_of(err) in ("BlobAlreadyExists", "ConditionNotMet"):
                raise ETagConflictError(f"blob: {key!r} was created by another writer") from err
            raise self._fail("create", key, err) from err

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        try:
            return await self._upload(key, document, etag=e_tag, match_condition=MatchConditions.IfNotModified)
        except AzureError as err:
            if status_of(err) == 412 or _absent(err):
                raise ETagConflictError(f"blob: {key!r} changed or was deleted since it was read") from err
            raise self._fail("write", key, err) from err

    async def _upsert(self, key: str, document: str) -> str:
        try:
            return await self._upload(key, document)
        except AzureError as err:
            raise self._fail("write", key, err) from err

    async def _remove(self, key: str) -> None:
        try:
            await self._container.delete_blob(self._blob_name(key), delete_snapshots="include")
        except AzureError as err:
            if not _absent(err):
                raise self._fail("delete", key, err) from err

    async def _remove_if(self, key: str, e_tag: str) -> None:
        try:
            await self._container.delete_blob(
                self._blob_name(key),
                delete_snapshots="include",
                etag=e_tag,
                match_condition=MatchConditions.IfNotModified,
            )
        except AzureError as err:
            if _absent(err):
                return
            if status_of(err) != 412:
                raise self._fail("delete", key, err) from err
            # Azurite answers 412 for a blob that is gone too; gone is what a delete wants.
            if await self._exists(key):
                raise ETagConflictError(f"blob: {key!r} changed since it was read, so it was not deleted") from err

    async def _exists(self, key: str) -> bool:
        try:
            return bool(await self._blob(self._blob_name(key)).exists())
        except AzureError as err:
            raise self._fail("read", key, err) from err

    async def _load_raw(self, key: str) -> str | None:
        found = await self._download(self._blob_name(key), key, "read")
        return None if found is None else found[1].decode("utf-8", "replace")

    async def _move(self, key: str, new_key: str) -> bool:
        name, new_name = self._blob_name(key), self._blob_name(new_key)
        found = await self._download(name, key, "move aside")
        if found is None:
            return False
        download, content = found
        try:
            await self._blob(new_name).upload_blob(
                content, overwrite=False, content_settings=download.properties.content_settings, max_concurrency=1
            )
            await self._container.delete_blob(
                name, etag=download.properties.etag, match_condition=MatchConditions.IfNotModified
            )
        except AzureError as err:
            if status_of(err) in (404, 409, 412) and error_code_of(err) != "ContainerNotFound":
                raise ETagConflictError(f"blob: {key!r} changed while it was being moved aside") from err
            raise self._fail("move aside", key, err) from err
        return True

    # -- helpers -----------------------------------------------------------------------------------------------

    def _blob(self, name: str) -> BlobClient:
        client = self._blobs.pop(name, None) or self._container.get_blob_client(name)
        self._blobs[name] = client
        if len(self._blobs) > BLOB_CLIENT_CACHE_SIZE:
            self._blobs.popitem(last=False)
        return client

    def _blob_name(self, key: str) -> str:
        self._check_open()
        return escape_blob_name(key)

    async def _download(self, name: str, key: str, action: str) -> tuple[StorageStreamDownloader[bytes], bytes] | None:
        """The blob ``name`` (of ``key``) and its bytes, or None when it does not exist."""
        try:
            download = await self._blob(name).download_blob(max_concurrency=1)
            return download, await download.readall()
        except AzureError as err:
            if _absent(err):
                return None
            raise self._fail(action, key, err) from err

    async def _upload(self, key: str, document: str, *, overwrite: bool = True, **conditions: Any) -> str:
        """Upload the record; ``overwrite=False`` adds ``If-None-Match: *``, ``conditions`` add ``If-Match``."""
        name = self._blob_name(key)
        result = await self._blob(name).upload_blob(
            _envelope(name, key, document),
            overwrite=overwrite,
            content_settings=_CONTENT_SETTINGS,
            max_concurrency=1,
            **conditions,
        )
        return str(result["etag"])

    def _unwrap(self, name: str, key: str, content: bytes) -> str:
        """The document text inside a blob's envelope; ``CorruptRecordError`` if it is not ours."""
        try:
            envelope = json.loads(content.decode("utf-8"))
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError; RecursionError: nesting
            raise CorruptRecordError(key, f"blob: {name!r} (key {key!r}) is not UTF-8 JSON: {err}") from err
        if not isinstance(envelope, dict) or not isinstance(envelope.get("document"), dict):
            raise CorruptRecordError(key, f"blob: {name!r} (key {key!r}) has no 'document' object")
        if envelope.get(REAL_KEY) != key:
            raise CorruptRecordError(
                key, f"blob: {name!r} holds the record of {envelope.get(REAL_KEY)!r}, not of {key!r}; left untouched"
            )
        return json.dumps(envelope["document"], ensure_ascii=False, separators=(",", ":"))
