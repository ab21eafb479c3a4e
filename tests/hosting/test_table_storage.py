"""Wire-level behaviour of the table backend (hosting/storage/table.py) that the contract suite cannot see.

Most tests run against Azurite (tests/support/azurite.py). Service failures Azurite cannot produce (500, 403) come from
``FakeEndpoint``, a fake endpoint that answers every request with one status; it is not Azure.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from azure.core.exceptions import HttpResponseError
from azure.data.tables.aio import TableClient

from hosting.storage import CorruptRecordError, ETagConflictError, RecordTooLargeError, StorageError
from hosting.storage.keys import escape_table_key
from hosting.storage.registry import TableSettings
from hosting.storage.table import (
    MAX_ENTITY_BYTES,
    ROW_KEY,
    TableStorage,
    entity_size,
    split_document,
)
from tests.support.azurite import (
    FAST_FAIL_CLIENT_OPTIONS,
    Azurite,
    FakeEndpoint,
    open_scratch_table_storage,
    scratch_settings,
)

KEY = "emulator/users/user-1"


@pytest_asyncio.fixture
async def store(azurite: Azurite) -> AsyncIterator[TableStorage]:
    storage = await open_scratch_table_storage(azurite)
    assert isinstance(storage, TableStorage)
    try:
        yield storage
    finally:
        await storage.close()


@pytest_asyncio.fixture
async def raw(azurite: Azurite, store: TableStorage) -> AsyncIterator[TableClient]:
    """A plain SDK client on the store's table, to look at or tamper with what the store wrote."""
    client = TableClient.from_connection_string(
        azurite.connection_string, store._table.table_name, **FAST_FAIL_CLIENT_OPTIONS
    )
    async with client:
        yield client


# -- pure helpers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "max_units", "pieces"),
    [
        ("", 4, [""]),
        ("abc", 4, ["abc"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        ("ab🤖cd", 3, ["ab", "🤖c", "d"]),  # 🤖 is two UTF-16 units and is never cut in half
        ("🤖🤖🤖", 2, ["🤖", "🤖", "🤖"]),
        ("é名" * 3, 4, ["é名é名", "é名"]),
    ],
)
def test_documents_are_split_into_pieces_of_at_most_n_utf16_units(
    document: str, max_units: int, pieces: list[str]
) -> None:
    assert split_document(document, max_units) == pieces


def test_entity_size_follows_the_services_formula() -> None:
    # 4 + 2*len(PartitionKey) + 2*len(RowKey) + per property: 8 + 2*len(name) + 4 + 2*len(value)
    entity = {"PartitionKey": "pk", "RowKey": "", "realId": "k", "document_0": "🤖x"}
    assert entity_size(entity) == 4 + 4 + 0 + (8 + 12 + 4 + 2) + (8 + 20 + 4 + 6)


# -- against Azurite ---------------------------------------------------------------------------------------------


async def test_one_entity_per_key_holds_the_original_key_and_the_document(
    store: TableStorage, raw: TableClient
) -> None:
    await store.write({KEY: {"name": "Ada"}})

    entity = await raw.get_entity("emulator*2fusers*2fuser-1", ROW_KEY)

    assert dict(entity) == {
        "PartitionKey": "emulator*2fusers*2fuser-1",
        "RowKey": "",
        "realId": KEY,
        "document_0": '{"name":"Ada"}',
    }
    assert (await store.read([KEY]))[KEY]["e_tag"] == entity.metadata["etag"]


async def test_a_large_document_is_split_across_properties_and_shrinks_back(
    store: TableStorage, raw: TableClient
) -> None:
    big = "🤖" * 40_000 + "x" * 400_000  # 480,000 UTF-16 units: 15 properties
    await store.write({KEY: {"text": big}})

    assert (await store.read([KEY]))[KEY]["text"] == big
    entity = await raw.get_entity(escape_table_key(KEY), ROW_KEY)
    pieces = sorted(name for name in entity if name.startswith("document_"))
    assert len(pieces) == 15

    item = (await store.read([KEY]))[KEY]
    item["text"] = "small"
    await store.write({KEY: item})  # a replace drops the pieces it no longer needs

    entity = await raw.get_entity(escape_table_key(KEY), ROW_KEY)
    assert [name for name in entity if name.startswith("document_")] == ["document_0"]
    assert (await store.read([KEY]))[KEY]["text"] == "small"


def _fits(store: TableStorage, characters: int) -> bool:
    try:
        store._entity(KEY, '{"text":"' + "x" * characters + '"}')
    except RecordTooLargeError:
        return False
    return True


async def test_the_largest_document_that_fits_is_stored(store: TableStorage) -> None:
    low, high = 0, MAX_ENTITY_BYTES  # fits, does not fit
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _fits(store, middle) else (low, middle)
    assert 520_000 < low < 524_288

    await store.write({KEY: {"text": "x" * low}})
    assert len((await store.read([KEY]))[KEY]["text"]) == low

    with pytest.raises(RecordTooLargeError):
        await store.write({KEY: {"text": "x" * high, "e_tag": "*"}})


async def test_a_record_over_the_entity_limit_is_refused_before_any_call() -> None:
    async with FakeEndpoint(500) as fake:
        client = TableClient.from_connection_string(fake.connection_string, "state", **FAST_FAIL_CLIENT_OPTIONS)
        store = TableStorage(client)
        try:
            for e_tag in (None, "*", "W/\"datetime'2026-01-01T00%3A00%3A00Z'\""):
                item: dict[str, object] = {"text": "x" * (MAX_ENTITY_BYTES // 2)}
                if e_tag is not None:
                    item["e_tag"] = e_tag
                with pytest.raises(RecordTooLargeError, match="more than the 1,048,576 an entity can hold") as caught:
                    await store.write({KEY: item})
                assert isinstance(caught.value, StorageError)
                assert isinstance(caught.value, ValueError)
        finally:
            await store.close()
        assert fake.requests == []


async def test_a_stale_e_tag_is_a_conflict_caused_by_the_services_412(store: TableStorage) -> None:
    await store.write({KEY: {"v": 1}})
    stale = (await store.read([KEY]))[KEY]
    await store.write({KEY: {"v": 2, "e_tag": "*"}})

    with pytest.raises(ETagConflictError) as caught:
        await store.write({KEY: stale})

    assert isinstance(caught.value.__cause__, HttpResponseError)
    assert caught.value.__cause__.status_code == 412


async def test_an_entity_that_is_not_ours_is_reported_corrupt_not_absent(store: TableStorage, raw: TableClient) -> None:
    await raw.create_entity({"PartitionKey": escape_table_key(KEY), "RowKey": ROW_KEY, "realId": "someone else"})
    await raw.create_entity({"PartitionKey": escape_table_key("bare"), "RowKey": ROW_KEY, "realId": "bare"})

    with pytest.raises(CorruptRecordError, match="someone else"):
        await store.read([KEY])
    with pytest.raises(CorruptRecordError, match="document_0"):
        await store.read(["bare"])


async def test_a_deleted_table_is_re_created_by_the_next_call_at_most_once_per_interval(
    store: TableStorage, raw: TableClient, caplog: pytest.LogCaptureFixture
) -> None:
    await store.write({KEY: {"v": 1}})
    await raw.delete_table()

    # The record went with the table; the store notices, makes the table again and carries on.
    assert await store.read([KEY]) == {}
    assert "was missing" in caplog.text
    await store.write({KEY: {"v": 2}})
    assert (await store.read([KEY]))[KEY]["v"] == 2

    # Deleted again at once: within the heal interval nothing is re-created, and the failure is not "absent".
    await raw.delete_table()
    with pytest.raises(StorageError, match="TableNotFound"):
        await store.read([KEY])
    with pytest.raises(StorageError, match="TableNotFound") as caught:
        await store.write({KEY: {"v": 1}})
    assert not isinstance(caught.value, ETagConflictError)


@pytest.mark.parametrize(
    ("status", "error_code"),
    [(500, "InternalError"), (503, "ServerBusy"), (403, "AuthorizationFailure"), (404, None)],
)
async def test_service_errors_are_raised_not_taken_for_absent(status: int, error_code: str | None) -> None:
    async with FakeEndpoint(status, error_code) as fake:
        client = TableClient.from_connection_string(fake.connection_string, "state", **FAST_FAIL_CLIENT_OPTIONS)
        store = TableStorage(client)
        try:
            with pytest.raises(StorageError, match=rf"table read of '{KEY}' failed .*HTTP {status}"):
                await store.read([KEY])
            with pytest.raises(StorageError, match=f"HTTP {status}") as caught:
                await store.write({KEY: {"v": 1}})
            assert not isinstance(caught.value, ETagConflictError)
            with pytest.raises(StorageError, match=f"HTTP {status}"):
                await store.write({KEY: {"v": 1, "e_tag": 'W/"x"'}})
            with pytest.raises(StorageError, match=f"HTTP {status}"):
                await store.write({KEY: {"v": 1, "e_tag": "*"}})
        finally:
            await store.close()
        assert fake.requests, "the fake endpoint was never asked"


async def test_a_dead_azurite_fails_fast_and_the_same_store_recovers_after_a_restart(
    azurite: Azurite, store: TableStorage
) -> None:
    await store.write({KEY: {"v": 1}})
    azurite.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"table read of .* failed"):
            await store.read([KEY])
        with pytest.raises(StorageError, match=r"table create of .* failed"):
            await store.write({"new": {"v": 1}})
        with pytest.raises(StorageError, match=r"table delete of .* failed"):
            await store.delete([KEY])
        assert time.monotonic() - started < 10
    finally:
        azurite.start()

    # In-memory Azurite forgot everything, table included: make it again, then use the very same store.
    await store._table.create_table()
    assert await store.read([KEY]) == {}
    await store.write({KEY: {"v": 2}})
    assert (await store.read([KEY]))[KEY]["v"] == 2


async def test_open_creates_the_table_once_and_describe_names_it(azurite: Azurite) -> None:
    settings = scratch_settings(azurite, "table").store
    first = await TableStorage.open(settings, **FAST_FAIL_CLIENT_OPTIONS)
    try:
        await first.write({KEY: {"v": 1}})
        second = await TableStorage.open(settings, **FAST_FAIL_CLIENT_OPTIONS)  # the table exists by now
        try:
            assert (await second.read([KEY]))[KEY]["v"] == 1
        finally:
            await second.close()
        description = first.describe()
        assert settings.table in description
        assert "devstoreaccount1" in description
    finally:
        await first.close()


async def test_open_fails_with_a_storage_error_when_the_service_refuses() -> None:
    async with FakeEndpoint(403, "AuthorizationFailure") as fake:
        settings = TableSettings(connection_string=fake.connection_string)
        with pytest.raises(StorageError, match=r"cannot open table 'BotState'.*HTTP 403"):
            await TableStorage.open(settings, **FAST_FAIL_CLIENT_OPTIONS)
