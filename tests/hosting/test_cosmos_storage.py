"""Cosmos DB backend, at the wire: what the service answers and what the bot sees.

What runs against what:

* Most tests use cosmosdb-server (npm ``@vercel/cosmosdb-server``, see tests/support/cosmos_server.py), a local
  implementation of the Cosmos REST protocol over HTTPS. Its status codes for the cases below (412, 404, 409)
  match Cosmos DB's; it is not the real service.
* ``stock_cosmos_server`` runs that server WITHOUT the fixture's missing-item fix: its 500 on reading a missing
  item is a genuine server error, used to show that a 500 is never taken for "absent".
* ``FakeCosmos`` is a fake: a plain-HTTP aiohttp app (no TLS) that answers the two metadata requests the SDK
  makes (account, container properties) and then whatever status a test scripts for item requests. It exists
  because neither the real service nor cosmosdb-server can be told to answer 403, and it records every request,
  so "refused before any request" can be checked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from hosting.storage import CorruptRecordError, ETagConflictError, RecordTooLargeError, StorageError
from hosting.storage.cosmos import MAX_ITEM_BYTES, CosmosStorage, UnsafeNumberError
from hosting.storage.keys import escape_cosmos_key
from tests.support.cosmos_server import (
    LOCAL_CLIENT_OPTIONS,
    TEST_KEY,
    CosmosServer,
    CosmosTarget,
    ScratchCosmosStorage,
    open_scratch_storage,
    start_cosmos_server,
)

KEY = "webchat/conversations/a/b\\c?d#e*f"


@pytest_asyncio.fixture
async def store(cosmos_server: CosmosServer) -> AsyncIterator[ScratchCosmosStorage]:
    storage = await open_scratch_storage(cosmos_server.target())
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
def stock_cosmos_server(tmp_path: Path) -> Iterator[CosmosServer]:
    """cosmosdb-server as published, without the fixture's fix: a missing item reads as 500."""
    server = start_cosmos_server(tmp_path / "stock-server", fix_missing_item_read=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def doomed_cosmos_server(tmp_path: Path) -> Iterator[CosmosServer]:
    """A private cosmosdb-server that a test may stop."""
    server = start_cosmos_server(tmp_path / "doomed-server")
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def raw_container(target: CosmosTarget, container_id: str) -> AsyncIterator[ContainerProxy]:
    """The SDK's own view of a container, bypassing the backend."""
    async with CosmosClient(target.endpoint, credential=target.key, **target.client_options) as client:
        yield client.get_database_client(target.database).get_container_client(container_id)


# -- a scripted fake endpoint ----------------------------------------------------------------------------------


class FakeCosmos:
    """Plain-HTTP fake of a Cosmos account with one container ``db/c``. Item requests get ``item_status``."""

    def __init__(self, item_status: int, item_body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.item_status = item_status
        self.item_body = item_body
        self.item_headers = headers or {}
        self.item_requests: list[tuple[str, str]] = []
        self.endpoint = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path.rstrip("/")
        if path == "":
            location = [{"name": "Local", "databaseAccountEndpoint": self.endpoint}]
            return web.json_response(
                {
                    "id": "fake",
                    "_rid": "fake",
                    "writableLocations": location,
                    "readableLocations": location,
                    "enableMultipleWriteLocations": False,
                    "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"},
                    "userReplicationPolicy": {},
                    "systemReplicationPolicy": {},
                    "readPolicy": {},
                    "queryEngineConfiguration": "{}",
                }
            )
        if path == "/dbs/db/colls/c":
            return web.json_response(
                {
                    "id": "c",
                    "_rid": "gAABAIAAAAE=",
                    "_self": "dbs/gAABAA==/colls/gAABAIAAAAE=/",
                    "_etag": '"1"',
                    "_ts": 1,
                    "partitionKey": {"paths": ["/id"], "kind": "Hash", "version": 2},
                }
            )
        self.item_requests.append((request.method, path))
        return web.json_response(self.item_body, status=self.item_status, headers=self.item_headers)

    async def __aenter__(self) -> FakeCosmos:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def storage(self) -> CosmosStorage:
        client = CosmosClient(self.endpoint, credential=TEST_KEY, **LOCAL_CLIENT_OPTIONS)
        return CosmosStorage(client, endpoint=self.endpoint, database="db", container="c")


# -- layout ----------------------------------------------------------------------------------------------------


async def test_items_use_botbuilders_layout_with_the_state_as_a_json_object(
    store: CosmosStorage, cosmos_server: CosmosServer
) -> None:
    await store.write({KEY: {"name": "Ada", "nested": {"n": [1, 2]}}})

    async with raw_container(cosmos_server.target(), store.container_id) as container:
        properties = await container.read()
        item = await container.read_item(item=escape_cosmos_key(KEY), partition_key=escape_cosmos_key(KEY))

    assert properties["partitionKey"]["paths"] == ["/id"]
    assert not set(item["id"]) & set("/\\?#")
    assert item["realId"] == KEY
    assert item["document"] == {"name": "Ada", "nested": {"n": [1, 2]}}
    assert (await store.read([KEY]))[KEY]["e_tag"] == item["_etag"]


async def test_an_item_that_belongs_to_another_key_is_a_corrupt_record(
    store: CosmosStorage, cosmos_server: CosmosServer
) -> None:
    async with raw_container(cosmos_server.target(), store.container_id) as container:
        await container.upsert_item({"id": escape_cosmos_key(KEY), "realId": "someone/else", "document": {}})

    with pytest.raises(CorruptRecordError, match="someone/else"):
        await store.read([KEY])


# -- conflicts: the service's status codes and what they become ------------------------------------------------


async def test_a_stale_e_tag_is_a_412_and_an_e_tag_conflict(store: CosmosStorage) -> None:
    await store.write({KEY: {"v": 1}})
    stale = (await store.read([KEY]))[KEY]
    await store.write({KEY: {**stale, "v": 2}})

    with pytest.raises(ETagConflictError) as caught:
        await store.write({KEY: {**stale, "v": 3}})

    assert isinstance(caught.value.__cause__, CosmosHttpResponseError)
    assert caught.value.__cause__.status_code == 412


async def test_replacing_a_deleted_item_is_a_404_and_an_e_tag_conflict(store: CosmosStorage) -> None:
    await store.write({KEY: {"v": 1}})
    item = (await store.read([KEY]))[KEY]
    await store.delete([KEY])

    with pytest.raises(ETagConflictError) as caught:
        await store.write({KEY: item})

    assert isinstance(caught.value.__cause__, CosmosHttpResponseError)
    assert caught.value.__cause__.status_code == 404


async def test_creating_an_existing_item_is_a_409_and_an_e_tag_conflict(store: CosmosStorage) -> None:
    await store.write({KEY: {"v": 1}})

    with pytest.raises(ETagConflictError) as caught:
        await store.write({KEY: {"v": 2}})

    assert isinstance(caught.value.__cause__, CosmosHttpResponseError)
    assert caught.value.__cause__.status_code == 409


# -- failures are never "absent" -------------------------------------------------------------------------------


async def test_a_genuine_500_on_reading_a_missing_item_is_a_storage_error(stock_cosmos_server: CosmosServer) -> None:
    storage = await open_scratch_storage(stock_cosmos_server.target())
    try:
        with pytest.raises(StorageError, match="HTTP 500") as caught:
            await storage.read([KEY])
    finally:
        await storage.close()

    assert type(caught.value) is StorageError
    assert isinstance(caught.value.__cause__, CosmosHttpResponseError)
    assert caught.value.__cause__.status_code == 500
    assert "Cannot read properties of undefined" in stock_cosmos_server.stderr()


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (403, {"code": "Forbidden", "message": "Request blocked by Auth: the key is not valid here."}, {}),
        (500, {"code": "InternalServerError", "message": "Unknown server error occurred."}, {}),
        (404, {"code": "NotFound", "message": "Owner resource does not exist"}, {"x-ms-substatus": "1003"}),
    ],
    ids=["403", "500", "404-container-missing"],
)
async def test_a_failed_read_is_a_storage_error_not_absent(
    status: int, body: dict[str, str], headers: dict[str, str]
) -> None:
    async with FakeCosmos(status, body, headers) as fake:
        storage = fake.storage()
        try:
            with pytest.raises(StorageError) as caught:
                await storage.read([KEY])
        finally:
            await storage.close()

    assert type(caught.value) is StorageError
    assert "cosmos read" in str(caught.value)
    assert repr(KEY) in str(caught.value)
    assert isinstance(caught.value.__cause__, CosmosHttpResponseError)
    assert caught.value.__cause__.status_code == status
    item_requests = [method for method, path in fake.item_requests if "/docs/" in path]
    assert item_requests
    assert set(item_requests) == {"GET"}  # a failed read changed no item (a missing container was re-created)


@pytest.mark.parametrize("e_tag", [None, "*", '"an-etag"'], ids=["create", "upsert", "replace"])
async def test_a_forbidden_write_is_a_storage_error_not_a_conflict(e_tag: str | None) -> None:
    async with FakeCosmos(403, {"code": "Forbidden", "message": "Request blocked by Auth."}) as fake:
        storage = fake.storage()
        item: dict[str, object] = {"v": 1} if e_tag is None else {"v": 1, "e_tag": e_tag}
        try:
            with pytest.raises(StorageError) as caught:
                await storage.write({KEY: item})
        finally:
            await storage.close()

    assert type(caught.value) is StorageError
    assert isinstance(caught.value.__cause__, CosmosHttpResponseError)
    assert caught.value.__cause__.status_code == 403


# -- limits checked before any request -------------------------------------------------------------------------


@pytest.mark.parametrize("e_tag", [None, "*", '"an-etag"'], ids=["create", "upsert", "replace"])
async def test_an_oversize_document_is_refused_before_any_request(e_tag: str | None) -> None:
    item: dict[str, object] = {"blob": "x" * MAX_ITEM_BYTES}
    if e_tag is not None:
        item["e_tag"] = e_tag
    async with FakeCosmos(200, {}) as fake:
        storage = fake.storage()
        try:
            with pytest.raises(RecordTooLargeError, match="bytes"):
                await storage.write({KEY: item})
        finally:
            await storage.close()

    assert fake.item_requests == []


# aiohttp warns (ResourceWarning) about any request body over 1 MiB sent as bytes, because copying it briefly holds
# the event loop; for one ~2 MB item that is a millisecond, and only this test sends one.
@pytest.mark.filterwarnings("ignore:Sending a large body directly with raw bytes:ResourceWarning")
async def test_a_document_just_under_the_limit_is_stored(store: CosmosStorage) -> None:
    empty = {"id": escape_cosmos_key(KEY), "realId": KEY, "document": {"blob": ""}}
    overhead = len(json.dumps(empty, separators=(",", ":"), ensure_ascii=False).encode())
    text = "é" * ((MAX_ITEM_BYTES - overhead) // 2)  # two UTF-8 bytes each: counted in bytes, not characters

    await store.write({KEY: {"blob": text}})

    assert (await store.read([KEY]))[KEY]["blob"] == text
    with pytest.raises(RecordTooLargeError):
        await store.write({KEY: {"blob": text + "éé", "e_tag": "*"}})


async def test_integers_cosmos_would_round_are_refused(store: CosmosStorage, cosmos_server: CosmosServer) -> None:
    # What Cosmos (and cosmosdb-server, for the same reason: JSON numbers are doubles) does with such a number:
    async with raw_container(cosmos_server.target(), store.container_id) as container:
        await container.upsert_item({"id": "raw", "n": 2**53 + 1})
        assert (await container.read_item(item="raw", partition_key="raw"))["n"] == 2**53

    with pytest.raises(UnsafeNumberError, match=str(2**53 + 1)):
        await store.write({KEY: {"deep": [{"n": 2**53 + 1}]}})
    await store.write({KEY: {"n": 2**53 - 1, "m": -(2**53 - 1)}})
    assert (await store.read([KEY]))[KEY]["n"] == 2**53 - 1


# -- an unreachable service -------------------------------------------------------------------------------------


async def test_a_stopped_server_makes_every_operation_a_storage_error_quickly(
    doomed_cosmos_server: CosmosServer,
) -> None:
    storage = await open_scratch_storage(doomed_cosmos_server.target())
    try:
        await storage.write({KEY: {"v": 1}})
        item = (await storage.read([KEY]))[KEY]
        doomed_cosmos_server.stop()

        operations: dict[str, Callable[[], Awaitable[object]]] = {
            "read": lambda: storage.read([KEY]),
            "create": lambda: storage.write({"other": {"v": 1}}),
            "replace": lambda: storage.write({KEY: item}),
            "upsert": lambda: storage.write({KEY: {"v": 2, "e_tag": "*"}}),
            "delete": lambda: storage.delete([KEY]),
        }
        for name, operation in operations.items():
            started = time.monotonic()
            with pytest.raises(StorageError) as caught:
                async with asyncio.timeout(20):
                    await operation()
            assert type(caught.value) is StorageError, name
            assert time.monotonic() - started < 15, name
    finally:
        await storage.close()


async def test_opening_an_unreachable_account_is_a_storage_error(doomed_cosmos_server: CosmosServer) -> None:
    doomed_cosmos_server.stop()

    with pytest.raises(StorageError, match="cannot open cosmos container"):
        async with asyncio.timeout(20):
            await open_scratch_storage(doomed_cosmos_server.target())


async def test_a_container_partitioned_on_another_path_is_refused(cosmos_server: CosmosServer) -> None:
    target = cosmos_server.target()
    async with CosmosClient(target.endpoint, credential=target.key, **target.client_options) as client:
        database = await client.create_database_if_not_exists(id=target.database)
        await database.create_container_if_not_exists(id="legacy", partition_key=PartitionKey(path="/partitionKey"))

    with pytest.raises(StorageError, match="partitioned on"):
        await CosmosStorage.open(target.settings("legacy"), **target.client_options)


# -- housekeeping -----------------------------------------------------------------------------------------------


async def test_describe_names_host_database_and_container(store: CosmosStorage, cosmos_server: CosmosServer) -> None:
    described = store.describe()

    assert f"127.0.0.1:{cosmos_server.port}" in described
    assert "bot-state-tests" in described
    assert store.container_id in described


def test_the_contract_suite_also_runs_on_a_real_cosmos_db_when_configured() -> None:
    """Only cosmosdb-server runs here. With COSMOS_ENDPOINT / COSMOS_KEY set, tests/support/backends.py adds a
    "cosmos-real" backend and the whole contract suite runs against that account or the official emulator."""
    from tests.support.backends import BACKENDS
    from tests.support.cosmos_server import real_cosmos_target

    real_cosmos_target()  # skips, saying why, when nothing is configured
    assert "cosmos-real" in BACKENDS
