"""A local Cosmos DB for the tests: npm ``@vercel/cosmosdb-server`` 1.0.1, plus how tests open storage on it.

cosmosdb-server speaks the Cosmos DB REST protocol over HTTPS (self-signed certificate) and keeps everything in
memory. It has one bug that matters to us: a point read of a MISSING document answers 500 ("Cannot read
properties of undefined (reading 'id')") where Cosmos DB answers 404. Its read handler looks the document up
and dereferences the result before checking it.

The product code rightly treats that 500 as a failure, so the fixture fixes the server, not the client: it runs
the server through a small Node launcher (``_LAUNCHER_JS`` below) that wraps that one handler and answers
404 ``{"code": "NotFound", ...}`` when the collection exists and the document does not, which is what the
handler itself answers for a missing collection. A second gap: a document operation in a collection that was
deleted crashes into a 500 or answers a plain 404, where Cosmos DB answers 404 with ``x-ms-substatus: 1003``
(owner resource does not exist), the signal the product heals on; the launcher answers that too. Everything else
is the stock server. ``start_cosmos_server(
fix_missing_item_read=False)`` runs the stock CLI instead, for the test that checks a genuine 500 is not taken
for "absent".

The server binds 127.0.0.1 port 0 itself and prints the port it got, so there is no race for a free port.

``CosmosTarget`` describes where a test's Cosmos lives: this server, or a real account / the official emulator
named by ``COSMOS_ENDPOINT`` and ``COSMOS_KEY`` (see ``real_cosmos_target``).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import AzureError

from hosting.storage.cosmos import CosmosStorage
from hosting.storage.registry import CosmosSettings
from tests.support.processes import ROOT

logger = logging.getLogger(__name__)

SERVER_PACKAGE = ROOT / "node_modules" / "@vercel" / "cosmosdb-server"
STARTUP_TIMEOUT_S = 30.0
_READY = re.compile(r"Ready to accept HTTPS connections at 127\.0\.0\.1:(\d+)")

#: cosmosdb-server accepts any base64 key; this one is made up.
TEST_KEY = base64.b64encode(b"cosmosdb-server-test-key-0123456").decode()

#: Client options for the local server: its certificate is self-signed, and a test against a stopped server must
#: fail in seconds instead of walking the SDK's default retry schedule.
LOCAL_CLIENT_OPTIONS: dict[str, Any] = {
    "connection_verify": False,
    "connection_timeout": 5,
    "read_timeout": 5,
    "retry_total": 1,
    "retry_backoff_max": 1,
    "retry_fixed_interval": 100,
}

_LAUNCHER_JS = r"""
"use strict";
// Starts @vercel/cosmosdb-server the way its CLI does (HTTPS, its bundled self-signed certificate) with two fixes.
// First: a point read of a missing document answers 404 NotFound, as Cosmos DB does, instead of crashing into a 500.
// The stock handler (lib/handler/read-document.js) reads `data[path]` before checking that `data` exists.
const path = require("path");
const lib = path.join(process.env.COSMOSDB_SERVER_PACKAGE, "lib");
const readDocument = require(path.join(lib, "handler", "read-document.js"));
const partitionFromHeader = require(path.join(lib, "utils", "get-partition-from-header.js"));
const trueHeader = require(path.join(lib, "true-header.js")).default;
const original = readDocument.default;

// Patched before lib/routes.js is loaded, so the route table picks up the wrapper.
readDocument.default = (account, req, res, params) => {
  const { dbId, collId, docId } = params;
  const collection = account.database(dbId).collection(collId);
  const header = partitionFromHeader.default(req);
  if (collection.read() && header && !trueHeader(req, "x-ms-documentdb-query-enablecrosspartition")) {
    let partitionKey;
    try {
      partitionKey = partitionFromHeader.parsePartitionKey(header, docId);
    } catch (err) {
      return original(account, req, res, params); // let the stock handler report the bad header
    }
    if (!collection.document(docId, partitionKey).read()) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
  }
  return original(account, req, res, params);
};

// A document operation in a collection that does not exist answers 404 with sub-status 1003 ("owner resource
// does not exist"), as Cosmos DB does; the stock handlers crash into a 500 or answer a plain 404 there.
for (const name of ["read-document", "create-document", "upsert-document", "replace-document", "delete-document"]) {
  const handler = require(path.join(lib, "handler", `${name}.js`));
  const stock = handler.default;
  handler.default = (account, req, res, params) => {
    if (!account.database(params.dbId).collection(params.collId).read()) {
      res.statusCode = 404;
      res.setHeader("x-ms-substatus", "1003");
      return { code: "NotFound", message: "Owner resource does not exist" };
    }
    return stock(account, req, res, params);
  };
}

// Exit when the test run that started us goes away (it holds our stdin open), so no server is ever orphaned.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();

// A certificate of the caller's (COSMOSDB_SERVER_TLS_CERT / _KEY) instead of the bundled, expired one, so that a
// client can verify TLS against it (the benchmark runs the unmodified bot that way).
const fs = require("fs");
const tls = process.env.COSMOSDB_SERVER_TLS_CERT
  ? {
      cert: fs.readFileSync(process.env.COSMOSDB_SERVER_TLS_CERT),
      key: fs.readFileSync(process.env.COSMOSDB_SERVER_TLS_KEY),
    }
  : {};
const { createHttpsServer } = require(lib);
const server = createHttpsServer(tls).listen(0, "127.0.0.1", () => {
  console.log(`Ready to accept HTTPS connections at 127.0.0.1:${server.address().port}`);
});
"""


def _unavailable(reason: str) -> None:
    """Skip, except on CI (``CI=true``), where a missing Cosmos stand-in must fail the run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@dataclass
class CosmosServer:
    """One running cosmosdb-server process."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log_dir: Path
    key: str = TEST_KEY
    client_options: dict[str, Any] = field(default_factory=lambda: dict(LOCAL_CLIENT_OPTIONS))

    @property
    def port(self) -> int:
        return int(urlsplit(self.endpoint).port or 0)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Idempotent."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def stderr(self) -> str:
        return _tail(self.log_dir / "stderr.log")

    def target(self) -> CosmosTarget:
        return CosmosTarget(self.endpoint, self.key, self.client_options)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


def start_cosmos_server(
    log_dir: Path, *, fix_missing_item_read: bool = True, tls: tuple[Path, Path] | None = None
) -> CosmosServer:
    """Start cosmosdb-server on a free 127.0.0.1 port and wait until it accepts connections.

    ``tls`` (certificate, key) replaces the server's bundled self-signed certificate (only with the launcher,
    i.e. ``fix_missing_item_read``).

    Skips (fails under CI=true) when node or the npm package is missing. Raises ``RuntimeError`` with the
    server's output when it does not come up within ``STARTUP_TIMEOUT_S``. The caller must ``stop()`` it.
    """
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed: cannot run the cosmosdb-server stand-in for Cosmos DB")
    if not (SERVER_PACKAGE / "lib" / "cli.js").is_file():
        _unavailable(f"{SERVER_PACKAGE} is missing: run `npm ci --ignore-scripts` in {ROOT}")
    assert node is not None
    log_dir.mkdir(parents=True, exist_ok=True)
    if fix_missing_item_read:
        launcher = log_dir / "launch-cosmosdb-server.js"
        launcher.write_text(_LAUNCHER_JS)
        command = [node, str(launcher)]
    else:
        command = [node, str(SERVER_PACKAGE / "lib" / "cli.js"), "--host", "127.0.0.1", "-p", "0"]
    stdout_path, stderr_path = log_dir / "stdout.log", log_dir / "stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if fix_missing_item_read else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={
                **os.environ,
                "COSMOSDB_SERVER_PACKAGE": str(SERVER_PACKAGE),
                **({"COSMOSDB_SERVER_TLS_CERT": str(tls[0]), "COSMOSDB_SERVER_TLS_KEY": str(tls[1])} if tls else {}),
            },
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    port: int | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            CosmosServer("", process, log_dir).stop()  # closes our end of its stdin
            raise RuntimeError(
                f"cosmosdb-server exited with {process.returncode} before it was ready:\n{_tail(stderr_path)}"
            )
        if port is None:
            match = _READY.search(_tail(stdout_path))
            port = int(match.group(1)) if match else None
        if port is not None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                pass
        time.sleep(0.05)
    else:
        CosmosServer("", process, log_dir).stop()
        raise RuntimeError(
            f"cosmosdb-server did not accept connections within {STARTUP_TIMEOUT_S:.0f} s.\n"
            f"stdout:\n{_tail(stdout_path)}\nstderr:\n{_tail(stderr_path)}"
        )
    logger.info("cosmosdb-server (pid %s) ready on 127.0.0.1:%s", process.pid, port)
    return CosmosServer(endpoint=f"https://127.0.0.1:{port}/", process=process, log_dir=log_dir)


@pytest.fixture(scope="session")
def cosmos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosServer]:
    """One cosmosdb-server for the whole run (with the missing-item fix); stopped at the end."""
    server = start_cosmos_server(tmp_path_factory.mktemp("cosmosdb-server"))
    try:
        yield server
    finally:
        server.stop()


# -- opening storage on a Cosmos ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CosmosTarget:
    """Where a test's Cosmos DB is and how to reach it."""

    endpoint: str
    key: str
    client_options: dict[str, Any]
    database: str = "bot-state-tests"

    def settings(self, container: str) -> CosmosSettings:
        return CosmosSettings(endpoint=self.endpoint, key=self.key, database=self.database, container=container)


class ScratchCosmosStorage(CosmosStorage):
    """A ``CosmosStorage`` on a container made for one test; ``close()`` deletes the container first."""

    async def close(self) -> None:
        if not self._closed:
            try:
                await self._client.get_database_client(self.database_id).delete_container(self.container_id)
            except AzureError as err:  # best effort: a stopped server or a lost connection must not fail the test
                logger.warning("could not delete the scratch container %s: %s", self._container.id, err)
        await super().close()


async def open_scratch_storage(target: CosmosTarget) -> ScratchCosmosStorage:
    """Open storage on a new, empty, uniquely named container of ``target`` (deleted again on ``close()``), with
    ``target``'s client options over the product's, and the SDK's own HTTP transport.

    Not the product's ``direct_transport``: cosmosdb-server closes the connection after every answer, and without
    the SDK transport's ``~/.netrc`` lookups (a worker thread, which the loop's shutdown waits for) the last TLS
    connection can still be shutting down when a test's event loop closes; CPython before 3.12.8 (and 3.13.0) then
    warns of an unclosed transport in whichever test runs next. The store's ``close`` also waits for TLS connections
    to finish closing (``hosting.storage._azure.TLS_CLOSE_SECONDS``). tests/hosting/test_store_faults.py opens the
    product's way.
    """
    settings = target.settings(container=f"test-{uuid.uuid4().hex[:12]}")
    return await ScratchCosmosStorage.open(settings, **target.client_options, transport=None)


REAL_COSMOS_SKIP_REASON = (
    "COSMOS_ENDPOINT/COSMOS_KEY unset: contract NOT run against a real Cosmos DB or the official emulator "
    "(a skip, not a pass)"
)


def real_cosmos_target() -> CosmosTarget:
    """The Cosmos DB named by ``COSMOS_ENDPOINT`` / ``COSMOS_KEY``, or skip with ``REAL_COSMOS_SKIP_REASON``.

    Test containers are created in ``COSMOS_TEST_DATABASE`` (default ``bot-state-tests``) and deleted after each
    test. TLS is verified except for a localhost endpoint (the emulator's certificate is self-signed).
    """
    endpoint = os.environ.get("COSMOS_ENDPOINT", "").strip()
    key = os.environ.get("COSMOS_KEY", "").strip()
    if not endpoint or not key:
        pytest.skip(REAL_COSMOS_SKIP_REASON)
    local = urlsplit(endpoint).hostname in ("localhost", "127.0.0.1", "::1")
    database = os.environ.get("COSMOS_TEST_DATABASE", "").strip() or "bot-state-tests"
    return CosmosTarget(endpoint, key, {"connection_verify": not local}, database=database)
