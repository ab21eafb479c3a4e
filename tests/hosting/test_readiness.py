"""/readyz proves the store can write: full and damaged SQLite stores answer 503; a read-only one never starts.

The faults are real, made without privileges the tests may not have:

* **disk full**: the bot runs as a real process whose file-size limit (``RLIMIT_FSIZE``, set in the child before
  it starts) is 64 KiB. CPython ignores ``SIGXFSZ``, so a write past the limit fails with ``EFBIG`` exactly where
  a full disk fails with ``ENOSPC``: the database's write-ahead log cannot grow, and SQLite reports an I/O error.
  A small tmpfs would need ``mount`` privileges.
* **read-only**: the database file is mode 0444. Root ignores file modes, so when the tests run as root the bot
  process gives up ``CAP_DAC_OVERRIDE`` / ``CAP_DAC_READ_SEARCH`` / ``CAP_FOWNER`` (``prctl(PR_CAPBSET_DROP)``
  before it starts), which makes the mode apply to it as to any user. The settings check refuses such a path.
* **damaged**: while the bot runs, another connection points the state table at a page that does not exist
  (``writable_schema``, the way a damaged schema page looks to SQLite).

The fault tests run with ``READY_CHECK_SECONDS=0`` (every call checks), so that a fault shows on the next call;
the cache itself is tested with its default and the interval changed on the running app (``app[READINESS]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from app import create_app
from config import Settings, load_settings
from hosting.pipeline import OUTAGE_TEXT
from hosting.server import HEARTBEAT_PREFIX, READINESS
from hosting.storage import SqliteStorage
from tests.support.channel import Conversation, FakeChannel, serving
from tests.support.processes import ROOT, URL_LINE, bot_environment

FILE_SIZE_LIMIT = 64 * 1024
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def _file_modes_apply() -> Callable[[], None] | None:
    """A pre-exec hook that makes file modes bind the bot even when the tests run as root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
            if prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return hook


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


async def _start_bot(log_path: Path, sqlite_path: Path, preexec_fn: Callable[[], None] | None) -> tuple[object, str]:
    """``python app.py`` on ``sqlite_path`` with ``preexec_fn`` run in the child; returns (process, base URL)."""
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "app.py",
            cwd=ROOT,
            env=bot_environment(PORT="0", SQLITE_PATH=str(sqlite_path), READY_CHECK_SECONDS="0"),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
    for _ in range(600):
        found = URL_LINE.findall(_read(log_path))
        if found:
            host, port = found[-1].split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
                return process, found[-1].removesuffix("/api/messages")
        if process.returncode is not None:
            break
        await asyncio.sleep(0.1)
    if process.returncode is None:
        process.kill()
    await process.wait()
    raise RuntimeError(f"the bot did not start:\n{_read(log_path)}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The app's settings for these tests: sqlite in a private folder, and /readyz checking on every call."""
    return load_settings(
        {"PORT": "0", "SQLITE_PATH": str(tmp_path / "state" / "bot.sqlite3"), "READY_CHECK_SECONDS": "0"}
    )


@pytest_asyncio.fixture
async def known_user_store(tmp_path: Path) -> AsyncIterator[Path]:
    """A database in which user-1 of the channel "test" is known as Ada, closed (its WAL checkpointed)."""
    path = tmp_path / "state" / "bot.sqlite3"
    storage = await SqliteStorage.open(path)
    await storage.write({"test/users/user-1": {"UserProfile": {"name": "Ada", "schema_version": 1}}})
    await storage.close()
    yield path


async def _ready(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, object]]:
    async with http.get(f"{base}/readyz") as response:
        return response.status, await response.json()


async def test_readyz_writes_one_heartbeat_record_per_process_not_a_users(
    settings, bot_url: str, http: aiohttp.ClientSession
) -> None:
    base = bot_url.removesuffix("/api/messages")
    for _ in range(3):
        assert await _ready(http, base) == (200, {"status": "ready", "storage": "sqlite"})

    with contextlib.closing(sqlite3.connect(settings.store.path)) as db:
        keys = [key for (key,) in db.execute("SELECT key FROM bot_state")]
    assert keys == [f"{HEARTBEAT_PREFIX}{socket.gethostname()}-{os.getpid()}"]


async def test_a_full_disk_turns_readyz_503_and_turns_fail_cleanly(
    tmp_path: Path, known_user_store: Path, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    process, base = await _start_bot(tmp_path / "bot.log", known_user_store, _limit_file_size)
    try:
        statuses = []
        for _ in range(60):  # each check appends one page (4 KiB) to the WAL; 64 KiB fill up after ~15
            status, body = await _ready(http, base)
            statuses.append(status)
            if status == 503:
                break
        assert statuses[0] == 200
        assert statuses[-1] == 503, "the write-ahead log never hit the file-size limit"
        assert body == {"status": "unavailable", "storage": "sqlite", "reason": "storage_error"}
        log = _read(tmp_path / "bot.log")
        assert "readiness check failed:" in log
        assert "disk I/O error" in log or "full" in log

        talk = Conversation(http, f"{base}/api/messages", channel, user_id="user-1", channel_id="test")
        failed = await talk.post(talk.activity("message", text="hello"))
        assert failed.status == 503
    finally:
        process.kill()
        await process.wait()

    storage = await SqliteStorage.open(known_user_store)  # nothing stored was lost or damaged
    try:
        assert (await storage.read(["test/users/user-1"]))["test/users/user-1"]["UserProfile"]["name"] == "Ada"
    finally:
        await storage.close()


async def test_a_read_only_copy_of_the_store_never_starts_serving(tmp_path: Path, known_user_store: Path) -> None:
    """A read-only store is refused at start-up (exit 2, one message naming SQLITE_PATH), so the instance never
    enters rotation. (A store that turns read-only while the bot runs, e.g. a file system remounted read-only,
    fails writes on the same path as the full disk above; remounting needs privileges the tests do not have.)"""
    os.chmod(known_user_store, 0o444)
    log_path = tmp_path / "bot.log"

    with pytest.raises(RuntimeError, match="did not start"):
        await _start_bot(log_path, known_user_store, _file_modes_apply())

    log = _read(log_path)
    assert f"SQLITE_PATH={known_user_store} is not readable and writable" in log
    assert "Traceback" not in log


async def test_a_store_damaged_while_the_bot_runs_turns_readyz_503(
    settings, bot_url: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    base = bot_url.removesuffix("/api/messages")
    assert (await _ready(http, base))[0] == 200

    with contextlib.closing(sqlite3.connect(settings.store.path)) as db:
        version = db.execute("PRAGMA schema_version").fetchone()[0]
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_schema SET rootpage = 9999 WHERE name = 'bot_state'")
        db.execute(f"PRAGMA schema_version = {version + 1}")
        db.commit()

    caplog.set_level(logging.WARNING, "hosting.server")
    status, body = await _ready(http, base)
    assert status == 503
    assert body == {"status": "unavailable", "storage": "sqlite", "reason": "storage_error"}
    assert "malformed" in caplog.text


async def test_a_database_deleted_while_the_bot_runs_fails_turns_and_readyz(
    settings, bot_url: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """Before, turns went on into the deleted file (200, and every user gone after a restart)."""
    talk = Conversation(http, bot_url, channel, expect_replies=True)
    await talk.say("hi")
    await talk.say("Ada")

    settings.store.path.unlink()
    reply = await talk.post(talk.activity(text="still there?"))

    assert reply.status == 503
    assert reply.body["error"]["code"] == "storage_unavailable"
    assert reply.texts == [OUTAGE_TEXT]
    status, body = await _ready(http, bot_url.removesuffix("/api/messages"))
    assert status == 503
    assert str(settings.store.path) not in str(body)
    assert not settings.store.path.exists()


def _heartbeat_e_tag(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (e_tag,) = db.execute("SELECT e_tag FROM bot_state WHERE key LIKE ?", (f"{HEARTBEAT_PREFIX}%",)).fetchone()
    return e_tag


async def test_readyz_writes_at_most_once_per_interval_and_concurrent_calls_share_one_check(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Every call used to write a heartbeat: anybody could make the bot write thousands of times a second."""
    settings = load_settings({"PORT": "0", "SQLITE_PATH": str(tmp_path / "bot.sqlite3")})
    assert settings.ready_check_seconds == 5  # the default
    app = await create_app(settings)
    readiness = app[READINESS]
    readiness.interval = 3600  # no second check can fall due during the test, however slow the machine

    async with serving(app) as url:
        base = url.removesuffix("/api/messages")
        first = await asyncio.gather(*(_ready(http, base) for _ in range(20)))
        written = _heartbeat_e_tag(settings.store.path)
        later = [await _ready(http, base) for _ in range(30)]

        assert all(answer == (200, {"status": "ready", "storage": "sqlite"}) for answer in first + later)
        assert readiness.checks == 1
        assert _heartbeat_e_tag(settings.store.path) == written

        readiness.interval = 0
        assert await _ready(http, base) == (200, {"status": "ready", "storage": "sqlite"})
        assert readiness.checks == 2
        assert _heartbeat_e_tag(settings.store.path) != written


async def test_a_failing_readyz_shows_no_internals_and_logs_one_warning_per_interval(
    settings: Settings, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The 503 body carries a reason code only; the path and SQLite's message go to the log, once per
    ``log_interval`` with the count of the failures in between, and recovery is logged once."""
    caplog.set_level(logging.INFO, "hosting.server")
    app = await create_app(settings)
    aside = settings.store.path.with_name("aside.sqlite3")
    async with serving(app) as url:
        base = url.removesuffix("/api/messages")
        settings.store.path.rename(aside)  # moved away while the bot runs

        answers = [await _ready(http, base) for _ in range(5)]

        assert answers == [(503, {"status": "unavailable", "storage": "sqlite", "reason": "storage_error"})] * 5
        # Only the readiness check's: the store's first maintenance round, started with the app, may meet the moved
        # file too and say so in a warning of its own.
        warnings = [
            record.getMessage()
            for record in caplog.records
            if record.levelno == logging.WARNING and record.getMessage().startswith("readiness check failed")
        ]
        assert len(warnings) == 1
        assert str(settings.store.path) in warnings[0]
        assert warnings[0].endswith("(0 more failed checks since the last report)")

        caplog.clear()
        app[READINESS].log_interval = 0
        assert (await _ready(http, base))[0] == 503
        assert [record.getMessage() for record in caplog.records][-1].endswith(
            "(4 more failed checks since the last report)"
        )

        caplog.clear()
        aside.rename(settings.store.path)
        assert (await _ready(http, base))[0] == 200
        assert [record.getMessage() for record in caplog.records] == [
            "readiness check passes again, after 6 failed checks"
        ]
