"""Wire-level behaviour of the blob backend (hosting/storage/blob.py) that the contract suite cannot see.

Most tests run against Azurite (tests/support/azurite.py). Service failures Azurite cannot produce (500, 403) come from
``FakeEndpoint``, a fake endpoint that answers every request with one status; it is not Azure.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.storage.blob.aio import ContainerClient

from hosting.storage import CorruptRecordError, ETagConflictError, StorageError
from hosting.storage.blob import BlobStorage
from hosting.storage.keys import escape_blob_name
from hosting.storage.registry import BlobSettings
from tests.support import azurite as azurite_module
from tests.support.azurite import (
    FAST_FAIL_CLIENT_OPTIONS,
    Azurite,
    FakeEndpoint,
    open_scratch_blob_storage,
    scratch_settings,
)

KEY = "emulator/users/user-1"


@pytest_asyncio.fixture
async def store(azurite: Azurite) -> AsyncIterator[BlobStorage]:
    storage = await open_scratch_blob_storage(azurite)
    assert isinstance(storage, BlobStorage)
    try:
        yield storage
    finally:
        await storage.close()


@pytest_asyncio.fixture
async def raw(azurite: Azurite, store: BlobStorage) -> AsyncIterator[ContainerClient]:
    """A plain SDK client on the store's container, to look at or tamper with what the store wrote."""
    client = ContainerClient.from_connection_string(
        azurite.connection_string, store._container.container_name, **FAST_FAIL_CLIENT_OPTIONS
    )
    async with client:
        yield client


async def test_records_are_named_like_botbuilder_azure_and_wrapped_with_their_key(
    store: BlobStorage, raw: ContainerClient
) -> None:
    await store.write({KEY: {"name": "Ada"}})

    blob = await raw.download_blob("emulator/users/user-1")
    envelope = json.loads(await blob.readall())
    properties = await raw.get_blob_client("emulator/users/user-1").get_blob_properties()

    assert envelope == {"id": "emulator/users/user-1", "realId": KEY, "document": {"name": "Ada"}}
    assert properties.content_settings.content_type.startswith("application/json")
    assert (await store.read([KEY]))[KEY]["e_tag"] == properties.etag


async def test_a_key_too_long_for_a_blob_name_is_stored_under_a_hashed_name(
    store: BlobStorage, raw: ContainerClient
) -> None:
    """That such a key round-trips is the contract's (tests/hosting/test_storage_contract.py); this is the name."""
    key = "directline/conversations/" + "x" * 3000
    await store.write({key: {"who": "long"}})

    names = [blob.name async for blob in raw.list_blobs()]
    assert names == [escape_blob_name(key)]
    assert len(names[0]) <= 1024


async def test_a_stale_e_tag_is_a_conflict_caused_by_the_services_412(store: BlobStorage) -> None:
    await store.write({KEY: {"v": 1}})
    stale = (await store.read([KEY]))[KEY]
    await store.write({KEY: {"v": 2, "e_tag": "*"}})

    with pytest.raises(ETagConflictError) as caught:
        await store.write({KEY: stale})

    assert isinstance(caught.value.__cause__, HttpResponseError)
    assert caught.value.__cause__.status_code == 412


async def test_a_blob_that_is_not_ours_is_reported_corrupt_not_absent(store: BlobStorage, raw: ContainerClient) -> None:
    await raw.upload_blob(escape_blob_name(KEY), b"not json")
    await raw.upload_blob(escape_blob_name("other"), json.dumps({"realId": "someone else", "document": {}}))

    with pytest.raises(CorruptRecordError, match="not UTF-8 JSON"):
        await store.read([KEY])
    with pytest.raises(CorruptRecordError, match="someone else"):
        await store.read(["other"])


async def test_a_deleted_container_is_re_created_by_the_next_call_at_most_once_per_interval(
    store: BlobStorage, raw: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    await store.write({KEY: {"v": 1}})
    await raw.delete_container()

    # The record went with the container; the store notices, makes the container again and carries on.
    assert await store.read([KEY]) == {}
    assert "was missing" in caplog.text
    await store.write({KEY: {"v": 2}})
    assert (await store.read([KEY]))[KEY]["v"] == 2

    # Deleted again at once: within the heal interval nothing is re-created, and the failure is not "absent".
    await raw.delete_container()
    with pytest.raises(StorageError, match="ContainerNotFound"):
        await store.read([KEY])
    with pytest.raises(StorageError, match="ContainerNotFound"):
        await store.delete([KEY])


@pytest.mark.parametrize(
    ("status", "error_code"),
    [(500, "InternalError"), (503, "ServerBusy"), (403, "AuthorizationFailure"), (404, None)],
)
async def test_service_errors_are_raised_not_taken_for_absent(status: int, error_code: str | None) -> None:
    async with FakeEndpoint(status, error_code) as fake:
        client = ContainerClient.from_connection_string(fake.connection_string, "state", **FAST_FAIL_CLIENT_OPTIONS)
        store = BlobStorage(client)
        try:
            with pytest.raises(StorageError, match=rf"blob read of '{KEY}' failed .*HTTP {status}"):
                await store.read([KEY])
            with pytest.raises(StorageError, match=f"HTTP {status}") as caught:
                await store.write({KEY: {"v": 1}})
            assert not isinstance(caught.value, ETagConflictError)
            with pytest.raises(StorageError, match=f"HTTP {status}"):
                await store.write({KEY: {"v": 1, "e_tag": '"0x1"'}})
            with pytest.raises(StorageError, match=f"HTTP {status}"):
                await store.delete([KEY])
        finally:
            await store.close()
        assert fake.requests, "the fake endpoint was never asked"


async def test_a_dead_azurite_fails_fast_and_the_same_store_recovers_after_a_restart(
    azurite: Azurite, store: BlobStorage
) -> None:
    await store.write({KEY: {"v": 1}})
    azurite.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"blob read of .* failed"):
            await store.read([KEY])
        with pytest.raises(StorageError, match=r"blob create of .* failed"):
            await store.write({"new": {"v": 1}})
        with pytest.raises(StorageError, match=r"blob delete of .* failed"):
            await store.delete([KEY])
        assert time.monotonic() - started < 10
    finally:
        azurite.start()

    # In-memory Azurite forgot everything, container included: make it again, then use the very same store.
    await store._container.create_container()
    assert await store.read([KEY]) == {}
    await store.write({KEY: {"v": 2}})
    assert (await store.read([KEY]))[KEY]["v"] == 2


async def test_open_creates_the_container_once_and_describe_names_it(azurite: Azurite) -> None:
    settings = scratch_settings(azurite, "blob").store
    first = await BlobStorage.open(settings, **FAST_FAIL_CLIENT_OPTIONS)
    try:
        await first.write({KEY: {"v": 1}})
        second = await BlobStorage.open(settings, **FAST_FAIL_CLIENT_OPTIONS)  # the container exists by now
        try:
            assert (await second.read([KEY]))[KEY]["v"] == 1
        finally:
            await second.close()
        description = first.describe()
        assert settings.container in description
        assert "devstoreaccount1" in description
    finally:
        await first.close()


async def test_open_fails_with_a_storage_error_when_the_service_refuses() -> None:
    async with FakeEndpoint(403, "AuthorizationFailure") as fake:
        settings = BlobSettings(connection_string=fake.connection_string)
        with pytest.raises(StorageError, match=r"cannot open blob container 'bot-state'.*HTTP 403"):
            await BlobStorage.open(settings, **FAST_FAIL_CLIENT_OPTIONS)


class _FakeCredential:
    """Stands in for DefaultAzureCredential, which would go looking for real Azure sign-ins."""

    def __init__(self) -> None:
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("not-a-real-token", int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_the_account_url_path_closes_its_credential_when_opening_fails(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    credential = _FakeCredential()
    monkeypatch.setattr("hosting.storage._azure.open_credential", lambda: credential)
    async with FakeEndpoint(500) as fake:
        # http: the SDK refuses a token over plain HTTP; https: the fake endpoint speaks no TLS.
        url = f"{scheme}://127.0.0.1:{fake.port}/devstoreaccount1"
        settings = BlobSettings(account_url=url)
        with pytest.raises(StorageError):
            await BlobStorage.open(settings, **FAST_FAIL_CLIENT_OPTIONS)
    assert credential.closed


def test_describe_never_shows_a_sas_token() -> None:
    connection = "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2020&sig=SECRET"
    store = BlobStorage(ContainerClient.from_connection_string(connection, "bot-state"))

    assert (
        store.describe()
        == "blob container 'bot-state' in storage account 'acct' at https://acct.blob.core.windows.net/bot-state"
    )
    assert "SECRET" not in store.describe()


# -- the Azurite fixture itself -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_node_skips_azurite_tests_except_on_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(azurite_module.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", ci)

    with pytest.raises(outcome, match="node"):
        azurite_module.require_node()
