"""Azurite, the local Azure Storage emulator, as a session-scoped pytest fixture.

One Azurite process (blob and table, in memory) serves the whole test session; it starts only when a test asks
for the ``azurite`` fixture, so runs that select only the memory or sqlite backends start nothing. Each test
gets its own container or table on it (see tests/support/backends.py), so tests never see each other's data.

``Azurite.stop()`` / ``Azurite.start()`` kill and restart it on the same ports for the wire tests, and
``pause()`` / ``resume()`` freeze and thaw it (SIGSTOP / SIGCONT); use a dedicated ``Azurite`` for those.
Unless made with ``persistent=True`` (data kept on disk in its workdir) it keeps no data across a restart
(``--inMemoryPersistence``): containers and tables are gone afterwards.

Where ``node`` or the npm package is missing the tests that need Azurite are skipped, unless ``CI=true``, where
that is a failure.

Also here: ``open_scratch_blob_storage`` / ``open_scratch_table_storage`` (a store on a fresh container or table,
opened through the product's ``BlobStorage.open`` / ``TableStorage.open`` with ``FAST_FAIL_CLIENT_OPTIONS``: no
retries, short timeouts), and ``FakeEndpoint``, a fake HTTP endpoint (not Azure, not Azurite) that answers every
request with one status.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp import web

from config import Settings, load_settings
from hosting.storage import StateStorage
from tests.support.processes import ROOT, free_port

logger = logging.getLogger(__name__)

AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"

# Azurite's well-known development account. Both values are public, documented by Azurite, and only work on it.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1

# SDK client options for tests: no retries and short timeouts, so a dead endpoint fails a test at once.
FAST_FAIL_CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 10}


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGKILL Azurite when pytest dies (even by SIGKILL), so no emulator outlives
    the session. The libc function is looked up here, in the parent: the hook itself only makes one call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def connection_string(blob_port: int, table_port: int) -> str:
    """A connection string for the development account on Azurite's blob and table ports."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{ACCOUNT_NAME};"
        f"TableEndpoint=http://127.0.0.1:{table_port}/{ACCOUNT_NAME};"
    )


def missing_node_reason() -> str | None:
    """Why Azurite cannot run here, or None."""
    if shutil.which("node") is None:
        return "Azurite needs node, which is not on PATH"
    if not AZURITE_BIN.exists():
        return f"Azurite is not installed ({AZURITE_BIN} is missing); run `npm ci --ignore-scripts`"
    return None


def require_node() -> None:
    """Skip the calling test when Azurite cannot run here; fail it instead when ``CI=true``."""
    reason = missing_node_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


@dataclass
class Azurite:
    """A running Azurite (blob + table) bound to 127.0.0.1, restartable on the same ports."""

    workdir: Path
    blob_port: int = field(default_factory=free_port)
    table_port: int = field(default_factory=free_port)
    queue_port: int = field(default_factory=free_port)
    #: Keep data in ``workdir`` across restarts (``--location``) instead of in memory.
    persistent: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.table_port)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Azurite on this object's ports and wait until both blob and table accept connections."""
        if self.running:
            return
        log_path = self.workdir / "azurite.log"
        self._log = log_path.open("ab")
        command = [
            str(AZURITE_BIN),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            # Idle connections stay open for the whole session, so a pooled connection is never closed under
            # a client between two tests.
            "--blobKeepAliveTimeout", "3600", "--tableKeepAliveTimeout", "3600",
            *(["--location", str(self.workdir / "data")] if self.persistent else ["--inMemoryPersistence"]),
            "--disableTelemetry", "--silent", "--skipApiVersionCheck",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_parent_death_signal(),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_accepts_connections(self.blob_port) and _accepts_connections(self.table_port)):
            if self._process.poll() is not None or time.monotonic() > deadline:
                problem = (
                    f"exited with status {self._process.returncode}"
                    if self._process.poll() is not None
                    else f"did not accept connections within {START_TIMEOUT_S:.0f} s"
                )
                self.stop()
                output = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"Azurite {problem}: {' '.join(command)}\n--- its output ---\n{output}")
            time.sleep(0.1)
        logger.info("Azurite is up: blob on %d, table on %d", self.blob_port, self.table_port)

    def stop(self, *, graceful: bool = False) -> None:
        """Kill Azurite (its in-memory data goes with it) and wait until the ports are closed.

        ``graceful`` sends SIGTERM instead, so a persistent Azurite writes its metadata to disk first (it saves
        on an interval, and a SIGKILL loses what it had not saved yet).
        """
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                if graceful:
                    process.send_signal(signal.SIGTERM)
                else:
                    process.kill()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("Azurite (pid %d) did not exit after SIGKILL", process.pid)
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """SIGSTOP: the process stays, its ports keep accepting connections (the kernel does that), nothing
        answers. What a hung or overloaded service looks like to a client."""
        assert self._process is not None
        assert self.running
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start Azurite again if a test stopped it and did not restart it."""
        if not self.running:
            self.start()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite (blob + table, in memory) for the whole session; killed at the end."""
    require_node()
    with tempfile.TemporaryDirectory(prefix="azurite-") as workdir:
        server = Azurite(Path(workdir))
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError as err:
                # Another program may have taken one of the free ports in between: try fresh ones.
                if attempt == 2 or "EADDRINUSE" not in str(err):
                    raise
                server = Azurite(Path(workdir))
        try:
            yield server
        finally:
            server.stop()


def scratch_environment(server: Azurite, storage: str) -> dict[str, str]:
    """The variables of a ``blob`` or ``table`` store on a fresh, uniquely named container or table on ``server``
    (for a bot started as a process)."""
    suffix = uuid.uuid4().hex[:20]
    return {
        "STORAGE": storage,
        "AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
        "BLOB_CONTAINER": f"test-{suffix}",
        "TABLE_NAME": f"test{suffix}",
    }


def scratch_settings(server: Azurite, storage: str) -> Settings:
    """Settings, read by ``config.load_settings``, for a fresh, uniquely named container or table on ``server``."""
    return load_settings(scratch_environment(server, storage))


async def open_scratch_blob_storage(server: Azurite) -> StateStorage:
    """A BlobStorage on a new, empty container, opened the way the app opens it, failing fast."""
    from hosting.storage.blob import BlobStorage

    server.ensure_running()
    return await BlobStorage.open(scratch_settings(server, "blob").store, **FAST_FAIL_CLIENT_OPTIONS)


async def open_scratch_table_storage(server: Azurite) -> StateStorage:
    """A TableStorage on a new, empty table, opened the way the app opens it, failing fast."""
    from hosting.storage.table import TableStorage

    server.ensure_running()
    return await TableStorage.open(scratch_settings(server, "table").store, **FAST_FAIL_CLIENT_OPTIONS)


class FakeEndpoint:
    """A fake Azure Storage endpoint (NOT Azurite): a tiny HTTP server on 127.0.0.1 that answers every request
    with one fixed status and counts the requests. For failures Azurite cannot be made to produce (500, 403).
    """

    def __init__(self, status: int, error_code: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path_qs}")
        headers = {"x-ms-error-code": self.error_code} if self.error_code else {}
        return web.Response(status=self.status, headers=headers)

    async def __aenter__(self) -> FakeEndpoint:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def connection_string(self) -> str:
        return connection_string(self.port, self.port)
