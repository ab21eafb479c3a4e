"""The default durable store: one SQLite file, shared safely by every worker process on the machine.

* Async with one thread hop per operation: the connection lives on a thread of its own (``_ConnectionThread``),
  and each operation (a read of several keys, a whole write transaction) is one function run there, never on
  the event loop. (aiosqlite hops to its thread for every statement and cursor step: five or more hops a turn,
  measured at a fifth of a turn's CPU.) Operations queued while the thread was busy run back to back and their
  results go back to the loop in one wake-up, so a busy bot pays one hand-off for many turns. One thread also
  means one operation at a time on the connection, so a statement can never land inside another operation's
  transaction, and a cancelled caller cannot leave a transaction open.
* WAL mode, so readers never wait for a writer. An operation that finds the database locked by another process
  waits for it (up to ``BUSY_TIMEOUT_MS``, in short sleeps) instead of failing at once, but only after a first
  try that does not wait: the usual operation never waits, and one that must wait first sends the answers the
  thread collected before it (see ``_ConnectionThread``). SQLite's own busy handler is off once the store is open:
  every call that can wait releases the GIL, and while the event loop holds it the connection's thread stands
  still (a busy timeout switched per operation cost a sixth of a turn). An operation under a
  ``storage_deadline`` (a turn) waits no longer than its deadline and is not started once it has passed, so
  operations queued behind a lock held elsewhere fail together instead of one timeout after another.
* Each write is a single statement that checks the e_tag itself (``UPDATE ... WHERE e_tag = ?``,
  ``INSERT`` against the primary key), so the check and the write are atomic across processes. A write of
  several keys runs them in one ``BEGIN IMMEDIATE`` transaction: all of them or none (``atomic_writes``).
* ``secure_delete`` is on, so deleted records are overwritten in the database file, and ``compact()``
  checkpoints and truncates the write-ahead log, where older copies of pages would otherwise linger.
* A file that is not an SQLite database, or was made by a newer schema, stops start-up with a message naming the
  file, and so does an empty (0-byte) file nobody is creating. Nothing is ever dropped or recreated.
* A new database is made under a temporary name in the same folder and linked into place once it holds its
  schema (``_create``), so a database this bot creates is never seen at its path with 0 bytes, even while several
  workers start on it at once (the first link wins; the others use that file).
* The file is the one opened: its identity (device, inode) is recorded at open and checked before every change,
  on the connection's thread in the same job. A database deleted, moved away or replaced by another file while
  the bot runs is an outage (``StorageError``), never a silent new store that a restart would then lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .base import (
    ANY_E_TAG,
    CorruptRecordError,
    ETagConflictError,
    PendingWrite,
    StateStorage,
    StorageError,
    StoredRecord,
    new_e_tag,
    storage_deadline_now,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bot_state (
    key        TEXT PRIMARY KEY,
    e_tag      TEXT NOT NULL,
    document   TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID
"""


# The expiry stamped into a document (see hosting.storage.base.EXPIRES_AT), indexed so that the cleanup finds expired
# records without a scan. json_valid first: a damaged document must not make every write to the table fail.
_EXPIRES_AT_SQL = """CASE WHEN json_valid(document) THEN json_extract(document, '$."$expiresAt"') END"""
_EXPIRY_INDEX = f"CREATE INDEX IF NOT EXISTS bot_state_expires_at ON bot_state ({_EXPIRES_AT_SQL})"


def _now() -> str:
    return datetime.now(UTC).isoformat()


type _Job = tuple[asyncio.Future[Any], Callable[..., Any], tuple[object, ...], bool]
type _Answers = dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, object]]]


class _WouldWait(Exception):
    """A job tried without waiting found the database locked by another connection; it changed nothing."""


class _ConnectionThread:
    """One thread that runs functions for the event loop, one at a time, in the order they were submitted.

    Like a one-worker ``ThreadPoolExecutor``, but what was queued while the thread worked is run back to back and
    answered in ONE ``call_soon_threadsafe`` per loop: under load many turns share one wake-up of the loop (and
    one hand-over of the GIL) instead of paying one each. A job that has to wait for another process's lock does
    not hold back the answers collected before it: a ``patient`` job is first run with ``patient=False`` and
    raises ``_WouldWait`` if it would wait; then the answers so far are sent and it runs again, waiting. (Sending
    them before every job that might wait cost a third of a turn's CPU.)
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: Which batch of jobs the thread is running (jobs read it to do something once per batch).
        self.batch = 0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def run[T](self, function: Callable[..., T], *arguments: object, patient: bool = False) -> asyncio.Future[T]:
        """Queue ``function(*arguments)``; the future (of the running loop) gets its result or its exception.

        ``patient``: ``function`` takes a ``patient`` keyword; with ``patient=False`` it must raise ``_WouldWait``
        instead of waiting for a lock (see the class).
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, function, arguments, patient))
        return future

    def stop(self) -> None:
        """Let the thread finish what is queued, then end. Does not wait for it."""
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            self.batch += 1
            batch: list[_Job] = []
            while job is not None:
                batch.append(job)
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
            answers: _Answers = {}
            for future, function, arguments, patient in batch:
                if future.cancelled():  # the caller gave up before it started: do nothing for it
                    continue
                try:
                    if not patient:
                        value = function(*arguments)
                    else:
                        try:
                            value = function(*arguments, patient=False)
                        except _WouldWait:
                            if answers:
                                _send(answers)
                                answers = {}
                            value = function(*arguments, patient=True)
                    answer: tuple[asyncio.Future[Any], bool, object] = (future, True, value)
                except BaseException as err:  # handed to the caller, who raises it
                    answer = (future, False, err)
                answers.setdefault(future.get_loop(), []).append(answer)
            _send(answers)
            if job is None:
                return


def _send(answers: _Answers) -> None:
    for loop, settled in answers.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(answers: list[tuple[asyncio.Future[Any], bool, object]]) -> None:
    """On the loop: hand each waiting caller its result or exception."""
    for future, succeeded, value in answers:
        if future.done():  # cancelled meanwhile
            continue
        if succeeded:
            future.set_result(value)
        else:
            future.set_exception(value)  # type: ignore[arg-type]


class SqliteStorage(StateStorage):
    name = "sqlite"
    atomic_writes = True
    expiry_cleanup = True

    def __init__(
        self, connection: sqlite3.Connection, thread: _ConnectionThread, path: Path, identity: _FileIdentity
    ) -> None:
        """Wrap a connection opened on ``thread`` and initialised, on the file ``identity`` names. Use :meth:`open`
        to get one."""
        self._db = connection
        self._thread = thread
        self._path = path
        self._identity = _IdentityCheck(identity)

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStorage:
        """Open (creating if needed) the database at ``path`` and make sure its schema is ours.

        ``StorageError`` when it cannot be used: not a database, a newer schema, an empty file, no access.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"cannot create the folder for the SQLite database {path}: {err}") from err
        thread = _ConnectionThread(f"sqlite {path.name}")
        try:
            connection, identity = await thread.run(_connect, path)
        except BaseException:
            thread.stop()
            raise
        return cls(connection, thread, path, identity)

    async def _call[T](self, action: str, function: Callable[..., T], *arguments: object) -> T:
        """Run ``function(connection, *arguments)`` on the connection's thread, waiting for another process's lock
        no longer than the caller's ``storage_deadline`` allows; SQLite errors become StorageError."""
        job = self._thread.run(_by_deadline, self._db, storage_deadline_now(), function, *arguments, patient=True)
        try:
            return await job
        except _OutOfTime as err:
            raise StorageError(f"sqlite {action} not started: {err}") from None
        except sqlite3.Error as err:
            raise self._error(action, err) from err

    async def _change[T](self, action: str, function: Callable[..., T], *arguments: object) -> T:
        """``_call`` for an operation that changes the file: first, in the same job, check that the file at the
        path is still the one opened."""
        return await self._call(action, _on_the_opened_file, self._identity, self._thread, function, *arguments)

    async def _load_many(self, keys: list[str]) -> dict[str, StoredRecord]:
        rows = await self._call("read", _select, keys)
        records: dict[str, StoredRecord] = {}
        for key, document, e_tag in rows:
            try:
                records[key] = StoredRecord(document.decode("utf-8"), e_tag)
            except UnicodeDecodeError as err:
                raise CorruptRecordError(key, f"sqlite: the stored record {key!r} is not valid UTF-8: {err}") from err
        return records

    async def _write_atomic(self, writes: list[PendingWrite]) -> list[str]:
        return await self._change("write", _write, writes)

    async def _remove(self, key: str) -> None:
        await self._change("delete", _execute, "DELETE FROM bot_state WHERE key = ?", (key,))

    async def _load_raw(self, key: str) -> str | None:
        rows = await self._call("read", _fetch, "SELECT CAST(document AS BLOB) FROM bot_state WHERE key = ?", (key,))
        return bytes(rows[0][0]).decode("utf-8", "replace") if rows else None

    async def _move(self, key: str, new_key: str) -> bool:
        query = "UPDATE bot_state SET key = ?, updated_at = ? WHERE key = ?"
        return await self._change("move aside", _execute, query, (new_key, _now(), key)) == 1

    async def _remove_expired(self, now: int, limit: int) -> int:
        query = (
            "DELETE FROM bot_state WHERE key IN "  # noqa: S608 - constant SQL, values bound
            f"(SELECT key FROM bot_state WHERE {_EXPIRES_AT_SQL} <= ? LIMIT ?)"
        )
        return await self._change("remove expired", _execute, query, (now, limit))

    async def _compact(self) -> None:
        try:
            await self._change("compact", _checkpoint)
        except StorageError as err:
            if not isinstance(err.__cause__, _CheckpointBusy):
                raise
            # Another process is reading an older snapshot; the next checkpoint (automatic or compact) finishes.
            logger.warning("sqlite: could not truncate the WAL of %s now: another connection is reading", self._path)

    async def _close(self) -> None:
        try:
            await self._call("close", sqlite3.Connection.close)
        finally:
            self._thread.stop()

    def describe(self) -> str:
        return f"sqlite at {self._path.resolve()}"

    def _error(self, action: str, err: Exception) -> StorageError:
        return StorageError(f"sqlite {action} failed on {self._path}: {err}")


# -- what runs on the connection's thread ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FileIdentity:
    """Which file the store opened: its path and, to tell it from a file that later takes its place, its device
    and inode."""

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _FileIdentity:
        found = os.stat(path)
        return cls(path, found.st_dev, found.st_ino)

    def check(self) -> None:
        """Raise ``StorageError`` unless the file at the path is still this one. One ``stat``, about a microsecond.

        SQLite keeps writing to the file it opened even once it has no name, so a deleted database takes every
        write without a complaint and loses them all when the process stops.
        """
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            raise StorageError(
                f"the SQLite database {self.path} was deleted or moved away while the bot was running; nothing is "
                "written until it is back at that path (or the bot is restarted on a new, empty database)"
            ) from None
        except OSError as err:
            raise StorageError(f"cannot check the SQLite database {self.path}: {err}") from err
        if (found.st_dev, found.st_ino) != (self.device, self.inode):
            raise StorageError(
                f"the SQLite database {self.path} was replaced by another file while the bot was running; nothing is "
                "written to either until the bot is restarted (on the new file) or the old file is put back"
            )


class _IdentityCheck:
    """The opened file's identity, checked once per batch of jobs of the connection's thread (which alone uses
    it): every write batch is checked, and a batch of many turns' writes pays one ``stat`` (one per write cost a
    tenth of a turn's throughput: each ``stat`` hands the GIL to the event loop and waits to get it back)."""

    def __init__(self, identity: _FileIdentity) -> None:
        self.identity = identity
        self._checked_batch = -1

    def check_in(self, batch: int) -> None:
        if batch != self._checked_batch:
            self.identity.check()
            self._checked_batch = batch


class _OutOfTime(Exception):
    """A job whose caller's deadline passed while it was queued; it was not run."""


def _by_deadline[T](
    db: sqlite3.Connection, deadline: float | None, function: Callable[..., T], *arguments: object, patient: bool
) -> T:
    """``function(db, *arguments)``. Not ``patient``: once, and ``_WouldWait`` (nothing changed) if another
    connection holds the lock it needs. ``patient``: retried in short sleeps while the lock is held, for at most
    ``BUSY_TIMEOUT_MS`` and never past ``deadline`` (``time.monotonic()``); then SQLite's "database is locked"."""
    if deadline is not None and deadline <= time.monotonic():
        raise _OutOfTime("the time allowed for it ran out while it was queued")
    give_up = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    if deadline is not None:
        give_up = min(give_up, deadline)
    pause = 0.001
    while True:
        try:
            return function(db, *arguments)
        except sqlite3.OperationalError as err:
            if not _locked(err) or db.in_transaction:
                raise
            if not patient:
                raise _WouldWait from err
            if time.monotonic() + pause > give_up:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _locked(err: sqlite3.OperationalError) -> bool:
    """Whether SQLite answered SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock this one needs."""
    if isinstance(err, _CheckpointBusy):
        return True
    return getattr(err, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _CheckpointBusy(sqlite3.OperationalError):
    """A checkpoint that another connection's read kept from truncating the log (SQLite reports it, not raises)."""


def _checkpoint(db: sqlite3.Connection) -> None:
    """Checkpoint and truncate the write-ahead log; ``_CheckpointBusy`` while a reader keeps it from finishing
    (``_by_deadline`` then tries again, as for a lock)."""
    busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy and busy[0]:
        raise _CheckpointBusy("the write-ahead log is still being read by another connection")


def _on_the_opened_file[T](
    db: sqlite3.Connection,
    identity: _IdentityCheck,
    thread: _ConnectionThread,
    function: Callable[..., T],
    *arguments: object,
) -> T:
    identity.check_in(thread.batch)
    return function(db, *arguments)


def _connect(path: Path) -> tuple[sqlite3.Connection, _FileIdentity]:
    """Open the database at ``path`` (made first if there is none) and initialise it; also its identity."""
    if _size(path) is None:
        _create(path)
    _refuse_an_empty_file(path)
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as err:
        raise StorageError(f"cannot open the SQLite database {path}: {err}") from err
    try:
        _initialise_when_free(connection, path)
        # From now on the connection's thread waits for locks itself (``_by_deadline``), not SQLite's busy handler.
        connection.execute("PRAGMA busy_timeout = 0")
        identity = _FileIdentity.of(path)
    except OSError as err:
        connection.close()
        raise StorageError(f"cannot open the SQLite database {path}: {err}") from err
    except BaseException:
        connection.close()
        raise
    return connection, identity


def _size(path: Path) -> int | None:
    """The size of the file at ``path`` in bytes; None when there is none."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StorageError(f"cannot open the SQLite database {path}: {err}") from err


def _create(path: Path) -> None:
    """Make a new database at ``path``: initialised under a temporary name in the same folder, then hard-linked
    into place, so that it never shows at ``path`` with 0 bytes (``sqlite3.connect`` creates the file empty and
    writes the header later). When another process links its own first, that one is used and ours is dropped.

    On a file system without hard links it is created in place, as ``sqlite3.connect`` does.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
    try:
        try:
            db = sqlite3.connect(temporary, isolation_level=None)
        except sqlite3.Error as err:
            raise StorageError(f"cannot create the SQLite database {path}: {err}") from err
        try:
            _initialise(db, path)
            # Everything into the main file: the WAL belongs to the temporary name and is removed with it.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            raise StorageError(f"cannot create the SQLite database {path}: {err}") from err
        finally:
            db.close()
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another worker created it first
        except OSError as err:
            logger.debug("sqlite: %s cannot be hard-linked (%s); creating the database in place", path, err)
    finally:
        for leftover in (temporary, *(temporary.with_name(temporary.name + end) for end in ("-wal", "-shm"))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _refuse_an_empty_file(path: Path) -> None:
    """``StorageError`` when the file at ``path`` is empty (0 bytes): SQLite would take it for a new database.

    An empty file whose write lock another connection holds is a database being created right now
    (``sqlite3.connect`` makes the file empty and writes its header with the first transaction): it is waited for,
    up to the busy timeout. Nothing is written to the file.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while _size(path) == 0:
        # Another process refusing the same file holds its lock for a moment too: look again once it is free.
        if not _write_locked(path) or time.monotonic() >= deadline:
            raise StorageError(
                f"SQLITE_PATH={path} is an empty file (0 bytes), not a database; it was left untouched. "
                "Restore the database from a backup, or delete the empty file to start with an empty store."
            )
        time.sleep(random.uniform(0.01, 0.05))


def _write_locked(path: Path) -> bool:
    """Whether another connection holds the write lock of the database at ``path``. Asks without waiting and
    writes nothing."""
    try:
        probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    except sqlite3.Error:
        return False
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    except sqlite3.Error as err:
        return "locked" in str(err)
    finally:
        probe.close()
    return False


def _initialise_when_free(db: sqlite3.Connection, path: Path) -> None:
    """``_initialise``, retried while another process holds the lock it needs.

    Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked" at once, without
    its busy handler, when another connection is setting up the same file: two gunicorn workers starting on a
    fresh database. This runs on the connection's own thread, so waiting here blocks no event loop.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            _initialise(db, path)
            return
        except StorageError as err:
            locked = isinstance(err.__cause__, sqlite3.OperationalError) and "locked" in str(err.__cause__)
            if not locked or time.monotonic() >= deadline:
                raise
        time.sleep(random.uniform(0.01, 0.05))


def _initialise(db: sqlite3.Connection, path: Path) -> None:
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the SQLite database {path} has schema version {version}, newer than this bot's "
                f"{SCHEMA_VERSION}; refusing to use it"
            )
        db.execute("PRAGMA secure_delete = ON")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(_SCHEMA)
        if db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'bot_state_expires_at'").fetchone() is None:
            db.execute(_EXPIRY_INDEX)  # only when missing: a read-only store still opens
        # Only when it changes: a store that cannot be written (read-only, disk full) still opens, and /readyz
        # says why it is not ready instead of the bot refusing to start.
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as err:
        raise StorageError(
            f"the SQLite database {path} is unusable ({err}); it was left untouched. "
            "Point SQLITE_PATH at another file or move this one away."
        ) from err


def _select(db: sqlite3.Connection, keys: list[str]) -> list[tuple[str, bytes, str]]:
    # The document as bytes, decoded by the caller: SQLite keeps whatever bytes it was given as TEXT, and sqlite3's
    # own decoding fails the whole read ("Could not decode to UTF-8") instead of naming the one damaged record.
    placeholders = ",".join("?" * len(keys))
    query = f"SELECT key, CAST(document AS BLOB), e_tag FROM bot_state WHERE key IN ({placeholders})"  # noqa: S608
    return db.execute(query, keys).fetchall()


def _fetch(db: sqlite3.Connection, query: str, parameters: tuple[object, ...]) -> list[tuple[object, ...]]:
    return db.execute(query, parameters).fetchall()


def _execute(db: sqlite3.Connection, query: str, parameters: tuple[object, ...]) -> int:
    return db.execute(query, parameters).rowcount


def _write(db: sqlite3.Connection, writes: list[PendingWrite]) -> list[str]:
    """Every write, or none: one statement alone is atomic; several run in one ``BEGIN IMMEDIATE`` transaction."""
    if len(writes) == 1:
        return [_write_statement(db, writes[0])]
    db.execute("BEGIN IMMEDIATE")
    try:
        new_tags = [_write_statement(db, write) for write in writes]
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may already have rolled back (e.g. after SQLITE_FULL)
            db.execute("ROLLBACK")
        raise
    return new_tags


def _write_statement(db: sqlite3.Connection, write: PendingWrite) -> str:
    """One key's write as one statement that checks its own condition (a conditional delete that finds nothing
    to delete looks once more to tell "changed" from "already gone")."""
    if write.delete:
        if write.e_tag == ANY_E_TAG:
            db.execute("DELETE FROM bot_state WHERE key = ?", (write.key,))
        elif (
            db.execute("DELETE FROM bot_state WHERE key = ? AND e_tag = ?", (write.key, write.e_tag)).rowcount != 1
            and db.execute("SELECT 1 FROM bot_state WHERE key = ?", (write.key,)).fetchone()
        ):
            raise ETagConflictError(f"sqlite: {write.key!r} changed since it was read, so it was not deleted")
        return ""
    e_tag = new_e_tag()
    now = _now()
    if write.e_tag is None:
        try:
            db.execute(
                "INSERT INTO bot_state (key, e_tag, document, updated_at) VALUES (?, ?, ?, ?)",
                (write.key, e_tag, write.document, now),
            )
        except sqlite3.IntegrityError as err:
            raise ETagConflictError(f"sqlite: {write.key!r} was created by another writer") from err
    elif write.e_tag == ANY_E_TAG:
        db.execute(
            "INSERT INTO bot_state (key, e_tag, document, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET e_tag = excluded.e_tag, document = excluded.document, "
            "updated_at = excluded.updated_at",
            (write.key, e_tag, write.document, now),
        )
    else:
        updated = db.execute(
            "UPDATE bot_state SET e_tag = ?, document = ?, updated_at = ? WHERE key = ? AND e_tag = ?",
            (e_tag, write.document, now, write.key, write.e_tag),
        ).rowcount
        if updated != 1:
            raise ETagConflictError(f"sqlite: {write.key!r} changed since it was read")
    return e_tag
