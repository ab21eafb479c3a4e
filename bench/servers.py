"""The processes the benchmark measures: how each is started, found ready, observed and stopped.

Every server binds 127.0.0.1: either a port it picks itself and announces (``python app.py``, the servers in
bench/), or, for gunicorn (which cannot announce one), a free port chosen here just before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import process_tree
from tests.support.azurite import _parent_death_signal
from tests.support.processes import ROOT, bot_environment, free_port

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
_ANNOUNCED = re.compile(r"(?:listening on|Emulator URL:) (http://127\.0\.0\.1:\d+/\S*)")


@dataclass
class Server:
    """One server process (and, for gunicorn, its workers)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    #: Known in advance (gunicorn); otherwise read from the server's start-up line.
    url: str = ""
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    pids: list[int] = field(default_factory=list)

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_signal(),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            if not self.url:
                found = _ANNOUNCED.findall(self.log_path.read_text(errors="replace"))
                self.url = found[-1] if found else ""
            if self.url and await _ready(self.url):
                self.pids = process_tree(self.process.pid)
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer within {START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def refresh_pids(self) -> None:
        """Look the process tree up again (gunicorn starts its workers after the master answers)."""
        if self.process is not None:
            self.pids = process_tree(self.process.pid)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        tree = process_tree(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await self.process.wait()

    def log_tail(self, limit: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


async def _ready(url: str) -> bool:
    """Whether something answers HTTP on the URL's port (any status: the servers have no common probe)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        return (await asyncio.wait_for(reader.read(12), 5)).startswith(b"HTTP/1.1")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def bench_server(name: str, module: str, workdir: Path, python: str = sys.executable, **env: str) -> Server:
    """One of the servers in bench/ (echo, the official sample, the Agents SDK port)."""
    return Server(name, [python, "-m", module], {**os.environ, **env}, workdir / f"{_slug(name)}.log")


def bot_server(name: str, workdir: Path, module: str = "", **settings: str) -> Server:
    """This bot as a user runs it: ``python app.py`` (or ``python -m module``, a variant of it), with every other
    setting neutral."""
    env = bot_environment(**{"PORT": "0", **settings})
    command = [sys.executable, "-m", module] if module else [sys.executable, "app.py"]
    return Server(name, command, env, workdir / f"{_slug(name)}.log")


def gunicorn_server(name: str, workdir: Path, workers: int, **settings: str) -> Server:
    """This bot as ``make serve`` runs it: gunicorn with gunicorn.conf.py and ``workers`` aiohttp workers."""
    port = free_port()
    env = bot_environment(
        **{"HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers)},
        **settings,
    )
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
    return Server(name, command, env, workdir / f"{_slug(name)}.log", url=f"http://127.0.0.1:{port}/api/messages")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
