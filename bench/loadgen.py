"""The load generator: virtual users on keep-alive HTTP/1.1 connections, and CPU / memory readings from /proc.

The client is a few lines over ``asyncio`` streams instead of aiohttp's client, so that one turn costs the
generator tens of microseconds and it stays far from being the bottleneck (its own CPU time is measured and
reported next to the server's). Each virtual user owns one connection and reopens it every
``RECONNECT_EVERY`` turns, so that with several gunicorn workers the kernel spreads users over the workers
again and again instead of once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

RECONNECT_EVERY = 5
TIMESTAMP = "2026-11-25T12:00:00.000Z"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class TurnFailed(Exception):
    """The server closed the connection or answered something that is not HTTP."""


@dataclass
class Tally:
    """What a target's measured turns added up to (summed over rounds)."""

    turns: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    conflicts: int = 0
    server_cpu: float = 0.0
    store_cpu: float = 0.0
    client_cpu: float = 0.0
    #: CPU seconds of each server process (gunicorn: shows how the load spread over the workers)
    process_cpu: dict[int, float] = field(default_factory=dict)
    first_error: str = ""


class VirtualUser:
    """One user talking in one conversation over its own keep-alive connection."""

    def __init__(
        self,
        url: str,
        user_id: str,
        conversation_id: str,
        reconnect_every: int = RECONNECT_EVERY,
        redeliver_every: int = 0,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.sent = 0
        self.reconnect_every = reconnect_every
        #: The first of every ``redeliver_every`` measured messages is followed by a copy of it (the same id), as a
        #: channel's retry: a copy comes right after a user's first measured message, however short the run.
        self.redeliver_every = redeliver_every
        self.copies = 0
        self._measured = 0
        self._from_next_text = False
        self._copy_next = False
        self._last_text = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._on_connection = 0

    def next_text(self) -> str:
        """The text of the next measured message: a new one, or (as ``redeliver_every`` says) the last one again."""
        self._from_next_text = True
        return self._last_text if self._copy_next else f"message {self.sent} of {self.user_id}"

    def activity(self, text: str) -> bytes:
        measured, self._from_next_text = self._from_next_text, False
        if self._copy_next and text == self._last_text:  # a redelivery: the same id as the last message
            self._copy_next = False
            self.copies += 1
        else:
            self.sent += 1
            self._last_text = text
            if measured and self.redeliver_every:
                self._measured += 1
                self._copy_next = (self._measured - 1) % self.redeliver_every == 0
        return json.dumps(
            {
                "type": "message",
                "id": f"{self.user_id}-{self.sent}",
                "timestamp": TIMESTAMP,
                "text": text,
                "channelId": "bench",
                "serviceUrl": "http://127.0.0.1:9/",
                "deliveryMode": "expectReplies",
                "from": {"id": self.user_id, "name": self.user_id},
                "recipient": {"id": "bot"},
                "conversation": {"id": self.conversation_id},
            }
        ).encode()

    async def post(self, text: str) -> tuple[int, bytes]:
        """Send one message; return the HTTP status and body. Reconnects when due or when the server closed."""
        body = self.activity(text)
        if self._writer is None or self._on_connection >= self.reconnect_every:
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._on_connection = 0
        self._on_connection += 1
        assert self._reader is not None
        self._writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (self.path.encode(), self.host.encode(), self.port, len(body), body)
        )
        try:
            return await self._response(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as err:
            await self.close()
            raise TurnFailed(f"{type(err).__name__}: {err}") from err

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            payload = b"".join(chunks)
        else:
            payload = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def is_conflict(status: int, body: bytes) -> bool:
    """A turn the bot refused because the conversation was busy (e_tag conflicts after its retries)."""
    return status == 503 or (status == 200 and b"busy" in body.lower())


async def measure(
    users: list[VirtualUser],
    seconds: float,
    tally: Tally,
    server_pids: Iterable[int],
    store_pids: Iterable[int] = (),
) -> None:
    """Keep every user busy for ``seconds`` (each sends its next message as soon as the last was answered) and
    add the turns, latencies, errors and CPU times to ``tally``. A reply counts only if it echoes the message."""
    server_pids, store_pids = list(server_pids), list(store_pids)
    for user in users:  # fresh connections: an idle keep-alive connection may have been closed by the server
        await user.close()
    per_process_before = {pid: cpu_seconds([pid]) for pid in server_pids}
    server_before, store_before = cpu_seconds(server_pids), cpu_seconds(store_pids)
    client_before = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds

    async def talk(user: VirtualUser) -> None:
        while time.perf_counter() < deadline:
            text = user.next_text()
            begun = time.perf_counter()
            try:
                status, body = await user.post(text)
            except (TurnFailed, OSError) as err:
                tally.errors += 1
                tally.first_error = tally.first_error or str(err)
                await asyncio.sleep(0.05)
                continue
            tally.latencies.append(time.perf_counter() - begun)
            tally.turns += 1
            if is_conflict(status, body):
                tally.conflicts += 1
            elif status != 200 or text.encode() not in body:
                tally.errors += 1
                tally.first_error = tally.first_error or f"HTTP {status}: {body[:200]!r}"

    await asyncio.gather(*(talk(user) for user in users))
    tally.seconds += time.perf_counter() - started
    tally.client_cpu += time.process_time() - client_before
    tally.server_cpu += cpu_seconds(server_pids) - server_before
    tally.store_cpu += cpu_seconds(store_pids) - store_before
    for pid, before in per_process_before.items():
        tally.process_cpu[pid] = tally.process_cpu.get(pid, 0.0) + cpu_seconds([pid]) - before


# -- /proc readings ---------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # the command name may contain spaces


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes so far (processes that are gone count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of these processes, summed."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (e.g. a gunicorn master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree
