"""Azure stores that hang or are wiped while the bot runs: fail fast, heal without a restart.

* **Paused**: a dedicated Azurite (or cosmosdb-server) is frozen with SIGSTOP. Its ports still accept connections
  (the kernel does that) but nothing answers, which is what a hung service looks like. Before the transports got
  their timeouts a turn waited 300 s here. The bound: a storage call must fail within ``OPERATION_TIMEOUT_S``
  plus slack for a loaded machine, and a turn through the real app within 30 s. After SIGCONT the very same app
  works again.
* **Wiped**: the container or table is deleted, or Azurite restarts empty (in memory): the next failing call
  re-creates it and the bot carries on, as a bot that has forgotten everything, without a restart.

Dedicated emulators: the shared session Azurite must never be paused or wiped under other tests.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from app import create_app
from hosting.storage import StorageError, build_storage
from hosting.storage._azure import OPERATION_TIMEOUT_S
from hosting.storage.cosmos import CosmosStorage
from hosting.storage.registry import CosmosSettings
from tests.support import counting_bot
from tests.support.azurite import Azurite, require_node, scratch_settings
from tests.support.channel import Conversation, FakeChannel
from tests.support.cosmos_server import LOCAL_CLIENT_OPTIONS, start_cosmos_server

#: A machine shared by several test runs can be slow to schedule; a hang would take minutes, not seconds.
SLACK_S = 8.0
TURN_BOUND_S = 30.0


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An Azurite for this test alone (in memory), so it can be paused or wiped."""
    require_node()
    server = Azurite(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.resume()
        server.stop()


@pytest_asyncio.fixture
async def app_on(own_azurite: Azurite, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The real app with the counting bot (tests/support/counting_bot.py) on ``own_azurite``, with the backend named
    by the test's ``backend`` parameter; its base URL."""
    settings = scratch_settings(own_azurite, request.node.callspec.params["backend"])
    runner = web.AppRunner(await create_app(settings, bot_factory=counting_bot.counting_bot))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _ready_status(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/readyz") as response:
        return response.status


@pytest.mark.parametrize("backend", ["blob", "table"])
async def test_a_paused_azurite_fails_a_storage_call_within_the_operation_timeout(
    own_azurite: Azurite, backend: str
) -> None:
    """The store is opened as the app opens it (product client options, not the tests' fast-fail ones)."""
    storage = await build_storage(scratch_settings(own_azurite, backend).store)
    try:
        await storage.write({"k": {"v": 1}})
        own_azurite.pause()
        try:
            started = time.monotonic()
            with pytest.raises(StorageError, match=r"no answer within|failed"):
                await storage.read(["k"])
            assert time.monotonic() - started < OPERATION_TIMEOUT_S + SLACK_S
        finally:
            own_azurite.resume()
        assert (await storage.read(["k"]))["k"]["v"] == 1
    finally:
        await storage.close()


@pytest.mark.parametrize("backend", ["blob", "table"])
async def test_a_paused_azurite_gives_503_within_30_s_and_the_next_turn_works(
    own_azurite: Azurite, app_on: str, backend: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    talk = Conversation(http, f"{app_on}/api/messages", channel)
    await talk.say("hi")
    await talk.say(counting_bot.call_me("Ada"))
    assert (await talk.say("before")).texts == [counting_bot.echo("before", 3, "Ada")]

    own_azurite.pause()
    try:
        started = time.monotonic()
        failed = await talk.post(talk.activity("message", text="while paused"))
        elapsed = time.monotonic() - started
        assert failed.status == 503
        assert elapsed < TURN_BOUND_S
    finally:
        own_azurite.resume()

    assert await _ready_status(http, app_on) == 200
    assert (await talk.say("after")).texts == [counting_bot.echo("after", 4, "Ada")]


async def test_a_paused_cosmos_fails_a_storage_call_within_the_operation_timeout(tmp_path: Path) -> None:
    server = start_cosmos_server(tmp_path / "cosmos")
    try:
        settings = CosmosSettings(endpoint=server.endpoint, key=server.key, container="paused")
        storage = await CosmosStorage.open(settings, connection_verify=LOCAL_CLIENT_OPTIONS["connection_verify"])
        try:
            await storage.write({"k": {"v": 1}})
            server.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(StorageError):
                    await storage.read(["k"])
                assert time.monotonic() - started < OPERATION_TIMEOUT_S + SLACK_S
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert (await storage.read(["k"]))["k"]["v"] == 1
        finally:
            await storage.close()
    finally:
        server.stop()


@pytest.mark.parametrize("wipe", ["container-deleted", "restarted-empty"])
@pytest.mark.parametrize("backend", ["blob", "table"])
async def test_a_wiped_store_heals_without_a_bot_restart(
    own_azurite: Azurite, app_on: str, backend: str, wipe: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    talk = Conversation(http, f"{app_on}/api/messages", channel)
    await talk.say("hi")
    await talk.say(counting_bot.call_me("Ada"))
    assert (await talk.say("before")).texts == [counting_bot.echo("before", 3, "Ada")]

    if wipe == "restarted-empty":
        own_azurite.restart()
    else:
        await _delete_everything(own_azurite, backend)

    # The first call after the wipe re-creates the container or table; the bot goes on as a new acquaintance.
    reply = await talk.say("after the wipe")
    assert reply.texts == [counting_bot.echo("after the wipe", 1)], "no name, and the count starts again"
    assert await _ready_status(http, app_on) == 200
    await talk.say(counting_bot.call_me("Grace"))
    assert (await talk.say("again")).texts == [counting_bot.echo("again", 3, "Grace")]


async def _delete_everything(server: Azurite, backend: str) -> None:
    if backend == "blob":
        from azure.storage.blob.aio import BlobServiceClient

        async with BlobServiceClient.from_connection_string(server.connection_string) as service:
            async for container in service.list_containers():
                await service.delete_container(container.name)
    else:
        from azure.data.tables.aio import TableServiceClient

        async with TableServiceClient.from_connection_string(server.connection_string) as service:
            async for table in service.list_tables():
                await service.delete_table(table.name)


async def test_a_deleted_cosmos_container_is_re_created_by_the_next_call(cosmos_server) -> None:
    from tests.support.cosmos_server import open_scratch_storage

    storage = await open_scratch_storage(cosmos_server.target())
    try:
        await storage.write({"k": {"v": 1}})
        await storage._client.get_database_client(storage.database_id).delete_container(storage.container_id)

        assert await storage.read(["k"]) == {}
        await storage.write({"k": {"v": 2}})
        assert (await storage.read(["k"]))["k"]["v"] == 2
    finally:
        await storage.close()
