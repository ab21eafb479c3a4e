"""``APPLICATIONINSIGHTS_CONNECTION_STRING`` turns the Azure Monitor distro on: a real ``python app.py`` sends its
turn spans and metrics to the ingestion endpoint the connection string names, and nothing anywhere else.

Application Insights cannot run here, so a local stand-in (an aiohttp server on 127.0.0.1) takes the exporter's
``POST /v2.1/track`` batches (gzip JSON envelopes) and live metrics' pings (the connection string's
``LiveEndpoint``); this is the one mock, of Azure's ingestion service.
Statsbeat, SDK stats and the control plane, which call Microsoft by themselves, are turned off as the tests must;
the VM resource detector (the instance-metadata address) is left as the app sets it. To prove that nothing else is
called, every HTTP client in the bot's process is sent through a recording proxy on 127.0.0.1 for any host but this
one (``HTTP(S)_PROXY`` with ``NO_PROXY=127.0.0.1``): the proxy must see nothing.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from hosting.telemetry import pseudonym
from tests.support import words
from tests.support.channel import Conversation, FakeChannel
from tests.support.processes import BotProcess, GunicornProcess

INSTRUMENTATION_KEY = "00000000-0000-4000-8000-000000000001"


class Ingestion:
    """Application Insights' ingestion and live metrics endpoints, on 127.0.0.1: keeps every envelope."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        self.paths: list[str] = []
        #: Answer every batch with a body that is not the service's JSON (a proxy's error page, say).
        self.garbled = False
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        body = await request.read()
        if request.path.endswith("/track"):
            if self.garbled:
                return web.Response(status=200, text="<html>not the ingestion service</html>")
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            items = json.loads(body)
            self.envelopes.extend(items)
            return web.json_response({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []})
        # Live metrics: "nobody is watching", so the process only pings now and then.
        return web.Response(status=200, headers={"x-ms-qps-subscribed": "false"})

    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        return [item["data"]["baseData"] for item in self.envelopes if item["data"]["baseType"] == base_type]


class RecordingProxy:
    """A proxy that forwards nothing: it keeps the first line of every request it gets (``CONNECT host:443``)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append((await reader.readline()).decode(errors="replace").strip())
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def _running[S: (Ingestion, RecordingProxy)](service: S) -> AsyncIterator[S]:
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest_asyncio.fixture
async def ingestion() -> AsyncIterator[Ingestion]:
    async with _running(Ingestion()) as service:
        yield service


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    async with _running(RecordingProxy()) as service:
        yield service


def _telemetry_environment(tmp_path: Path, ingestion: Ingestion, proxy: RecordingProxy) -> dict[str, str]:
    """Settings that send telemetry to ``ingestion`` and every other HTTP call to ``proxy``."""
    proxies = {name: proxy.url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return dict(
        SQLITE_PATH=str(tmp_path / "bot.sqlite3"),
        APPLICATIONINSIGHTS_CONNECTION_STRING=(
            f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={ingestion.url};LiveEndpoint={ingestion.url}"
        ),
        APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
        APPLICATIONINSIGHTS_SDKSTATS_DISABLED="true",
        APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        TMPDIR=str(tmp_path),  # the exporter's retry files, if any
        # The distro's default sampler keeps about 5 traces a second, adapting over 0.1 s windows: two turns
        # right after the start would mostly be dropped. This standard setting keeps every trace.
        OTEL_TRACES_SAMPLER="always_on",
        **proxies,
    )


@dataclass
class Local:
    """Application Insights' stand-in, the recording proxy, and the settings that send a bot to them."""

    ingestion: Ingestion
    proxy: RecordingProxy
    tmp_path: Path

    @property
    def environment(self) -> dict[str, str]:
        return _telemetry_environment(self.tmp_path, self.ingestion, self.proxy)

    def bot(self) -> BotProcess:
        """``python app.py`` on sqlite with telemetry sent to the stand-in and every other call to the proxy."""
        return BotProcess(self.tmp_path / "bot.log", **self.environment)


@pytest.fixture
def local(tmp_path: Path, ingestion: Ingestion, proxy: RecordingProxy) -> Local:
    return Local(ingestion, proxy, tmp_path)


async def test_a_bot_with_a_connection_string_sends_its_turns_to_application_insights_and_nowhere_else(
    local: Local, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    ingestion, proxy = local.ingestion, local.proxy
    bot = local.bot()
    try:
        url = await bot.start()
        talk = Conversation(http, url, channel, user_id="user-private-7", conversation_id="conversation-7")
        assert (await talk.say("hello")).texts == [words.stranger()]
        assert (await talk.say("Katherine")).texts == [words.thanks("Katherine")]
        # Live metrics pings its endpoint about every 5 s while nobody watches (the first ~2 s after the start).
        for _ in range(100):
            if any("QuickPulseService" in path for path in ingestion.paths):
                break
            await asyncio.sleep(0.1)
    finally:
        assert await bot.stop() == 0, bot.log_path.read_text()

    log = bot.log_path.read_text()
    assert "telemetry: sending traces, metrics and warnings to Application Insights" in log
    assert "Traceback" not in log
    assert all(item["iKey"] == INSTRUMENTATION_KEY for item in ingestion.envelopes)
    turns = [span for span in ingestion.of_type("RemoteDependencyData") if span["name"] == "turn"]
    assert len(turns) == 2, ingestion.envelopes
    properties = turns[0]["properties"]
    assert properties["bot.turn.outcome"] == "ok"
    assert properties["bot.channel"] == "emulator"
    assert properties["bot.user"] == pseudonym("user-private-7")
    requests = [span for span in ingestion.of_type("RequestData") if span["name"] == "POST /api/messages"]
    assert len(requests) == 2
    assert {span["name"] for span in ingestion.of_type("RemoteDependencyData")} >= {"sqlite read", "sqlite write"}
    metrics = {metric["name"] for data in ingestion.of_type("MetricData") for metric in data["metrics"]}
    assert {"bot.turns", "bot.turn.duration"} <= metrics, metrics
    sent = json.dumps(ingestion.envelopes)
    for private in ("Katherine", "user-private-7"):
        assert private not in sent
    assert any("QuickPulseService" in path for path in ingestion.paths), "live metrics used the LiveEndpoint"
    assert proxy.requests == [], "the bot called something other than this machine"


async def test_an_ingestion_endpoint_that_answers_garbage_neither_loops_nor_holds_up_the_stop(
    local: Local, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """The exporter logs an error for a batch it cannot send. Exported too, that error was another batch that
    failed, logged, and so on: the process sent batches without end and never stopped on SIGTERM. The exporter's
    own log records stay out of the export, and the stop's flush is bounded."""
    ingestion, proxy = local.ingestion, local.proxy
    ingestion.garbled = True
    bot = local.bot()
    try:
        url = await bot.start()
        talk = Conversation(http, url, channel)
        assert (await talk.say("hello")).texts == [words.stranger()]
        await asyncio.sleep(2)
    finally:
        assert await bot.stop() == 0, bot.log_path.read_text()  # within BotProcess.stop's 30 s

    batches = sum(1 for path in ingestion.paths if path.endswith("/track"))
    assert 1 <= batches <= 10, f"{batches} batches sent"
    assert proxy.requests == []


async def test_each_gunicorn_worker_configures_telemetry_once_and_sends_its_own_turns(
    local: Local, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """``make serve``'s gunicorn with 2 workers: each builds its app, so each configures the distro once (after the
    fork: exporter threads do not survive one) and exports the turns it served."""
    ingestion, proxy = local.ingestion, local.proxy
    server = GunicornProcess(local.tmp_path / "gunicorn.log", **local.environment)
    await server.start()
    try:
        talks = [Conversation(http, server.messages_url, channel) for _ in range(8)]
        for talk in talks:
            assert (await talk.say("hello")).texts == [words.stranger()]
    finally:
        assert await server.stop() == 0, server.log_path.read_text()

    log = server.log_path.read_text()
    assert log.count("telemetry: sending traces, metrics and warnings to Application Insights") == 2, log
    turns = [span for span in ingestion.of_type("RemoteDependencyData") if span["name"] == "turn"]
    assert len(turns) == len(talks)
    assert proxy.requests == []
