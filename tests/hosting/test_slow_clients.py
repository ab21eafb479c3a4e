"""Slow and flooding clients against the real server processes (``python app.py`` and gunicorn), real sockets.

``REQUEST_TIMEOUT_SECONDS=1`` makes the bounds short. Every loop here has a fixed number of steps, so a server
that never cuts a client off fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.support.processes import ROOT, BotProcess, bot_environment, free_port

TIMEOUT = "1"
STEP = 0.2
MAX_STEPS = 40  # 8 s of trickling: far beyond the 1 s bound


class Server:
    def __init__(self, base: str, log_path: Path) -> None:
        self.base = base
        self.host, port = base.split("//", 1)[1].rsplit(":", 1)
        self.port = int(port)
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def _wait_ready(base: str, log_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    pytest.fail("the server did not start:\n" + await asyncio.to_thread(log_path.read_text))


@contextlib.asynccontextmanager
async def app_py(tmp_path: Path, files: int | None = None) -> AsyncIterator[Server]:
    def limit() -> None:
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    log_path = tmp_path / "app.log"
    bot = BotProcess(
        log_path,
        preexec_fn=limit if files is not None else None,
        SQLITE_PATH=str(tmp_path / "bot.sqlite3"),
        REQUEST_TIMEOUT_SECONDS=TIMEOUT,
    )
    url = await bot.start()
    try:
        yield Server(url.rsplit("/api/", 1)[0], log_path)
    finally:
        await bot.stop()


@contextlib.asynccontextmanager
async def gunicorn(tmp_path: Path, files: int | None = None) -> AsyncIterator[Server]:
    def limit() -> None:
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = bot_environment(
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        SQLITE_PATH=str(tmp_path / "bot.sqlite3"),
        REQUEST_TIMEOUT_SECONDS=TIMEOUT,
    )
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gunicorn",
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit if files is not None else None,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base, log_path)
        yield Server(base, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


SERVERS = {"app.py": app_py, "gunicorn": gunicorn}


@pytest_asyncio.fixture(params=sorted(SERVERS))
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    async with SERVERS[request.param](tmp_path) as running:
        yield running


async def _hang_up(writer: asyncio.StreamWriter) -> None:
    """Drop a raw connection now, unsent bytes included, and wait until its socket is closed.

    A plain ``close()`` waits for unsent bytes to reach a server that may have stopped reading: the socket can
    then outlive the test's event loop and surface later as a ResourceWarning in an unrelated test.
    """
    writer.transport.abort()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server has closed the connection (waits one step for news)."""
    try:
        data = await asyncio.wait_for(reader.read(4096), STEP)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


async def test_a_client_trickling_its_headers_is_cut_off(server: Server) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 100
    sent = 0
    try:
        for byte in head[:MAX_STEPS]:
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
                await writer.drain()
            sent += 1
            if await _closed(reader):
                break
        else:
            pytest.fail(f"still connected after {MAX_STEPS} steps of {STEP} s")
    finally:
        await _hang_up(writer)
    assert sent >= 3  # it was cut off by the timer, not refused outright


async def test_a_client_trickling_its_body_gets_a_408(server: Server) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    writer.write(head)
    await writer.drain()
    answer = b""
    try:
        for _ in range(MAX_STEPS):
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
                await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), STEP)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or b"}}" in answer:
                break
        else:
            pytest.fail(f"no answer after {MAX_STEPS} steps of {STEP} s")
    finally:
        await _hang_up(writer)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer


async def test_idle_connections_are_closed_and_the_server_keeps_answering(server: Server) -> None:
    connections = [await asyncio.open_connection(server.host, server.port) for _ in range(50)]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{server.base}/healthz") as response:
            assert response.status == 200
        open_ones = list(connections)
        for _ in range(MAX_STEPS):
            open_ones = [(reader, writer) for reader, writer in open_ones if not await _closed(reader)]
            if not open_ones:
                break
        assert open_ones == [], f"{len(open_ones)} idle connections still open after {MAX_STEPS * STEP:g} s"
    finally:
        for _, writer in connections:
            await _hang_up(writer)


@pytest.mark.parametrize("kind", sorted(SERVERS))
async def test_descriptor_exhaustion_is_logged_rarely_and_the_server_recovers(tmp_path: Path, kind: str) -> None:
    """The server may hold 40 descriptors; 100 clients connect and hold on. accept() fails with EMFILE until the
    server's 1 s timer frees descriptors. The log gets a line per 10 s, not a traceback per failure, and once
    the clients are gone ``/healthz`` answers again."""
    async with SERVERS[kind](tmp_path, files=40) as running:
        held = []
        for _ in range(100):
            held.append(await asyncio.open_connection(running.host, running.port))
        await asyncio.sleep(3)
        for _, writer in held:
            await _hang_up(writer)

        async with aiohttp.ClientSession() as http:
            for _ in range(MAX_STEPS):
                try:
                    async with http.get(f"{running.base}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as response:
                        if response.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(STEP)
            else:
                pytest.fail("the server did not recover:\n" + running.log[-3000:])
        log = running.log

    reports = log.count("cannot accept connections")
    assert 1 <= reports <= 2, log[-3000:]
    assert "Traceback" not in log
    assert len(log) < 20_000
