"""The default durable store: one SQLite file, shared safely by every worker process on the machine.

* Async: statements run on aiosqlite's worker thread, never on the event loop.
* WAL mode, so readers never wait for a writer; a ``busy_timeout`` lets concurrent writers from other
  processes queue instead of failing at once.
* Each write is a single statement that checks the e_tag itself (``UPDATE ... WHERE e_tag = ?``,
  ``INSERT`` against the primary key), so the check and the write are atomic across processes. A write of
  several keys runs them in one ``BEGIN IMMEDIATE`` transaction: all of them or none (``atomic_writes``).
* One connection per store, used by one operation at a time (an ``asyncio.Lock``): a statement of another
  coroutine must never land inside, or be rolled back with, a transaction it is not part of.
* ``secure_delete`` is on, so deleted records are overwritten in the database file, and ``compact()``
  checkpoints and truncates the write-ahead log, where older copies of pages would otherwise linger.
* A file that is not an SQLite database, or was made by a newer schema, stops start-up with a message naming the
  file. Nothing is ever dropped or recreated.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from .base import ANY_E_TAG, ETagConflictError, PendingWrite, StateStorage, StorageError, StoredRecord, new_e_tag

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


# The expiry stamped into a document (see storage.base.EXPIRES_AT), indexed so that the cleanup finds expired
# records without a scan. json_valid first: a damaged document must not make every write to the table fail.
_EXPIRES_AT_SQL = """CASE WHEN json_valid(document) THEN json_extract(document, '$."$expiresAt"') END"""
_EXPIRY_INDEX = f"CREATE INDEX IF NOT EXISTS bot_state_expires_at ON bot_state ({_EXPIRES_AT_SQL})"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteStorage(StateStorage):
    name = "sqlite"
    atomic_writes = True
    expiry_cleanup = True

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        """Wrap an open, initialised connection. Use :meth:`open` to get one."""
        self._db = connection
        self._path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStorage:
        """Open (creating if needed) the database at ``path`` and make sure its schema is ours."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"cannot create the folder for the SQLite database {path}: {err}") from err
        try:
            connection = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as err:
            raise StorageError(f"cannot open the SQLite database {path}: {err}") from err
        try:
            await cls._initialise(connection, path)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, path)

    @staticmethod
    async def _initialise(db: aiosqlite.Connection, path: Path) -> None:
        try:
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"the SQLite database {path} has schema version {version}, newer than this bot's "
                    f"{SCHEMA_VERSION}; refusing to use it"
                )
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA secure_delete = ON")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute(_SCHEMA)
            async with db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'bot_state_expires_at'") as cursor:
                if await cursor.fetchone() is None:  # only when missing: a read-only store still opens
                    await db.execute(_EXPIRY_INDEX)
            # Only when it changes: a store that cannot be written (read-only, disk full) still opens, and /readyz
            # says why it is not ready instead of the bot refusing to start.
            if version != SCHEMA_VERSION:
                await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise StorageError(
                f"the SQLite database {path} is unusable ({err}); it was left untouched. "
                "Point SQLITE_PATH at another file or move this one away."
            ) from err

    async def _load_many(self, keys: list[str]) -> dict[str, StoredRecord]:
        placeholders = ",".join("?" * len(keys))
        query = f"SELECT key, document, e_tag FROM bot_state WHERE key IN ({placeholders})"  # noqa: S608
        async with self._lock:
            rows = await self._guard("read", self._fetch_all(query, keys))
        return {key: StoredRecord(document, e_tag) for key, document, e_tag in rows}

    async def _insert(self, key: str, document: str) -> str:
        return (await self._write_atomic([PendingWrite(key, document, None)]))[0]

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        return (await self._write_atomic([PendingWrite(key, document, e_tag)]))[0]

    async def _upsert(self, key: str, document: str) -> str:
        return (await self._write_atomic([PendingWrite(key, document, ANY_E_TAG)]))[0]

    async def _write_atomic(self, writes: list[PendingWrite]) -> list[str]:
        async with self._lock:
            if len(writes) == 1:  # one statement is already atomic: no transaction needed
                return [await self._write_statement(writes[0])]
            await self._guard("write", self._db.execute("BEGIN IMMEDIATE"))
            try:
                new_tags = [await self._write_statement(write) for write in writes]
                await self._guard("write", self._db.execute("COMMIT"))
            except BaseException:
                await self._rollback()
                raise
            return new_tags

    async def _write_statement(self, write: PendingWrite) -> str:
        """One key's write as one statement that checks its own condition. The caller holds the lock."""
        e_tag = new_e_tag()
        now = _now()
        if write.e_tag is None:
            try:
                await self._db.execute(
                    "INSERT INTO bot_state (key, e_tag, document, updated_at) VALUES (?, ?, ?, ?)",
                    (write.key, e_tag, write.document, now),
                )
            except sqlite3.IntegrityError as err:
                raise ETagConflictError(f"sqlite: {write.key!r} was created by another writer") from err
            except sqlite3.Error as err:
                raise self._error("write", err) from err
        elif write.e_tag == ANY_E_TAG:
            await self._guard(
                "write",
                self._db.execute(
                    "INSERT INTO bot_state (key, e_tag, document, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET e_tag = excluded.e_tag, document = excluded.document, "
                    "updated_at = excluded.updated_at",
                    (write.key, e_tag, write.document, now),
                ),
            )
        else:
            updated = await self._guard(
                "write",
                self._row_count(
                    "UPDATE bot_state SET e_tag = ?, document = ?, updated_at = ? WHERE key = ? AND e_tag = ?",
                    (e_tag, write.document, now, write.key, write.e_tag),
                ),
            )
            if updated != 1:
                raise ETagConflictError(f"sqlite: {write.key!r} changed since it was read")
        return e_tag

    async def _rollback(self) -> None:
        try:
            await asyncio.shield(self._db.execute("ROLLBACK"))
        except sqlite3.Error as err:  # SQLite may already have rolled back (e.g. after SQLITE_FULL)
            logger.debug("sqlite: rollback after a failed write: %s", err)

    async def _remove(self, key: str) -> None:
        async with self._lock:
            await self._guard("delete", self._db.execute("DELETE FROM bot_state WHERE key = ?", (key,)))

    async def _move(self, key: str, new_key: str) -> bool:
        async with self._lock:
            moved = await self._guard(
                "move aside",
                self._row_count("UPDATE bot_state SET key = ?, updated_at = ? WHERE key = ?", (new_key, _now(), key)),
            )
        return moved == 1

    async def _remove_expired(self, now: int, limit: int) -> int:
        query = (
            "DELETE FROM bot_state WHERE key IN "  # noqa: S608 - constant SQL, values bound
            f"(SELECT key FROM bot_state WHERE {_EXPIRES_AT_SQL} <= ? LIMIT ?)"
        )
        async with self._lock:
            return await self._guard("remove expired", self._row_count(query, (now, limit)))

    async def _ping(self) -> None:
        async with self._lock:
            await self._guard("ping", self._fetch_all("SELECT count(*) FROM bot_state WHERE key = ''", ()))

    async def _compact(self) -> None:
        async with self._lock:
            rows = await self._guard("compact", self._fetch_all("PRAGMA wal_checkpoint(TRUNCATE)", ()))
        busy = rows[0][0] if rows else 0
        if busy:
            # Another process is reading an older snapshot; the next checkpoint (automatic or compact) finishes.
            logger.warning("sqlite: could not truncate the WAL of %s now: another connection is reading", self._path)

    async def _close(self) -> None:
        async with self._lock:
            await self._db.close()

    def describe(self) -> str:
        return f"sqlite at {self._path.resolve()}"

    async def _fetch_all(self, query: str, parameters: tuple[object, ...] | list[str]) -> list[sqlite3.Row]:
        # One call on aiosqlite's thread: the SELECT runs and finishes there, so no read snapshot stays open.
        return list(await self._db.execute_fetchall(query, parameters))

    async def _row_count(self, query: str, parameters: tuple[object, ...]) -> int:
        async with self._db.execute(query, parameters) as cursor:
            return cursor.rowcount

    async def _guard[T](self, action: str, call: Awaitable[T]) -> T:
        """Await ``call``, turning SQLite's errors into ``StorageError`` naming the file."""
        try:
            return await call
        except sqlite3.Error as err:
            raise self._error(action, err) from err

    def _error(self, action: str, err: Exception) -> StorageError:
        return StorageError(f"sqlite {action} failed on {self._path}: {err}")
