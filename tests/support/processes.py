"""Run the bot as a real process (``python app.py`` or gunicorn) for restart and multi-worker tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from config import load_settings, setting_names

ROOT = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"Emulator URL: (http://\S+)")
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port the OS says is free right now on 127.0.0.1 (for programs that cannot report the port they got)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every setting is passed explicitly (empty means "default"), so a developer's .env or shell cannot leak in.
_NEUTRAL = dict.fromkeys(setting_names(), "")


def bot_environment(**settings: str) -> dict[str, str]:
    """The current environment with every bot setting neutralised, then ``settings``.

    gunicorn reads ``WEB_CONCURRENCY`` itself and cannot take an empty one: it gets the documented default.
    """
    return {**os.environ, **_NEUTRAL, "WEB_CONCURRENCY": "2", **settings}


class BotProcess:
    """``python app.py`` in its own process; the URL is read from its start-up log line."""

    ARGS: tuple[str, ...] = ("app.py",)
    URL_PATTERN = URL_LINE

    def __init__(self, log_path: Path, preexec_fn: Callable[[], None] | None = None, **settings: str) -> None:
        self.log_path = log_path
        self.preexec_fn = preexec_fn
        self.env = bot_environment(**{"PORT": "0", **settings})
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> str:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *self.ARGS,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + START_TIMEOUT
        offset = self.log_path.stat().st_size if self.url else 0
        while time.monotonic() < deadline:
            found = self.URL_PATTERN.findall(self.log_path.read_text(errors="replace")[offset:])
            if found and await self._answers(found[-1]):
                self.url = found[-1]
                return self.url
            if self.process.returncode is not None:
                raise RuntimeError(f"the bot exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the bot did not start within {START_TIMEOUT} s:\n{self.log_path.read_text()}")

    async def _answers(self, url: str) -> bool:
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def stop(self) -> int:
        """SIGTERM, as App Service and systemd stop a process; returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def run_app_expecting_failure(**settings: str) -> subprocess.CompletedProcess[str]:
    """Start ``python app.py`` with bad settings; it must stop by itself quickly."""
    env = bot_environment(**{"PORT": "0", **settings})
    return subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


class GunicornProcess:
    """``python -m gunicorn`` with the repository's ``gunicorn.conf.py``, as ``make serve`` runs it, on a free port.

    ``app``: another application than the configuration's ``app:create_app`` (``module:create_app``, as gunicorn
    takes it on its command line), e.g. ``tests.support.counting_bot:create_app``.
    """

    def __init__(self, log_path: Path, app: str | None = None, **settings: str) -> None:
        self.log_path = log_path
        self.app = app
        self.port = free_port()
        self.env = bot_environment(**{"HOST": "127.0.0.1", "PORT": str(self.port), **settings})
        self.settings = load_settings(self.env)
        self.process: asyncio.subprocess.Process | None = None

    @property
    def messages_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/messages"

    async def _spawn(self) -> asyncio.subprocess.Process:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gunicorn",
                *([self.app] if self.app else []),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    async def start(self) -> None:
        """Start it and wait until every worker answers ``/readyz``."""
        process = await self._spawn()
        workers = self.settings.web_concurrency
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{self.log_path.read_text()}")
            if self.log_path.read_text(errors="replace").count("state storage:") >= workers and await self._ready():
                return
            await asyncio.sleep(0.1)
        await self.stop()
        raise TimeoutError(f"gunicorn did not start within {START_TIMEOUT} s:\n{self.log_path.read_text()}")

    async def _ready(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = await reader.readline()
        except OSError:  # a worker that is still starting may reset the connection
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return b" 200 " in status

    async def stop(self) -> int:
        """SIGTERM, as App Service stops it; returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    async def run_expecting_failure(self) -> int:
        """Start it with settings it must refuse; it has to stop by itself."""
        process = await self._spawn()
        return await asyncio.wait_for(process.wait(), 60)


_HOLD_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
sys.stdout.write("locked\\n")
sys.stdout.flush()
sys.stdin.read()
db.execute("ROLLBACK")
"""


@asynccontextmanager
async def sqlite_write_lock_held(path: Path) -> AsyncIterator[None]:
    """Another process holds the write lock of the SQLite database at ``path`` (an open ``BEGIN IMMEDIATE``, as a
    maintenance script can leave it) for the duration of the block."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLD_WRITE_LOCK, str(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT) == b"locked\n"
        yield
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
