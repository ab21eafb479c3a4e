"""The default durable store: one SQLite file, shared safely by every worker process on the machine.

* Async: statements run on aiosqlite's worker thread, never on the event loop.
* WAL mode, so readers never wait for a writer; a ``busy_timeout`` lets concurrent writers from other
  processes queue instead of failing at once.
* Each write is a single statement that checks the e_tag itself (``UPDATE ... WHERE e_tag = ?``,
  ``INSERT`` against the primary key), so the check and the write are atomic across processes.
* A file that is not an SQLite database, or was made by a newer schema, stops start-up with a message naming the
  file. Nothing is ever dropped or recreated.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from .base import ETagConflictError, StateStorage, StorageError, StoredRecord, new_e_tag

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


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteStorage(StateStorage):
    name = "sqlite"

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        """Wrap an open, initialised connection. Use :meth:`open` to get one."""
        self._db = connection
        self._path = path

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
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute(_SCHEMA)
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise StorageError(
                f"the SQLite database {path} is unusable ({err}); it was left untouched. "
                "Point SQLITE_PATH at another file or move this one away."
            ) from err

    async def _load_many(self, keys: list[str]) -> dict[str, StoredRecord]:
        placeholders = ",".join("?" * len(keys))
        query = f"SELECT key, document, e_tag FROM bot_state WHERE key IN ({placeholders})"  # noqa: S608
        try:
            # One call on aiosqlite's thread: a SELECT left open between awaits holds a read snapshot on the shared
            # connection, and another turn's write through it then fails with SQLITE_BUSY_SNAPSHOT ("database is
            # locked", no busy wait) whenever another process wrote meanwhile.
            rows = await self._db.execute_fetchall(query, keys)
        except sqlite3.Error as err:
            raise self._error("read", err) from err
        return {key: StoredRecord(document, e_tag) for key, document, e_tag in rows}

    async def _insert(self, key: str, document: str) -> str:
        e_tag = new_e_tag()
        try:
            await self._db.execute(
                "INSERT INTO bot_state (key, e_tag, document, updated_at) VALUES (?, ?, ?, ?)",
                (key, e_tag, document, _now()),
            )
        except sqlite3.IntegrityError as err:
            raise ETagConflictError(f"sqlite: {key!r} was created by another writer") from err
        except sqlite3.Error as err:
            raise self._error("write", err) from err
        return e_tag

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        new_tag = new_e_tag()
        try:
            async with self._db.execute(
                "UPDATE bot_state SET e_tag = ?, document = ?, updated_at = ? WHERE key = ? AND e_tag = ?",
                (new_tag, document, _now(), key, e_tag),
            ) as cursor:
                updated = cursor.rowcount
        except sqlite3.Error as err:
            raise self._error("write", err) from err
        if updated != 1:
            raise ETagConflictError(f"sqlite: {key!r} changed since it was read")
        return new_tag

    async def _upsert(self, key: str, document: str) -> str:
        e_tag = new_e_tag()
        try:
            await self._db.execute(
                "INSERT INTO bot_state (key, e_tag, document, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET e_tag = excluded.e_tag, document = excluded.document, "
                "updated_at = excluded.updated_at",
                (key, e_tag, document, _now()),
            )
        except sqlite3.Error as err:
            raise self._error("write", err) from err
        return e_tag

    async def _remove(self, key: str) -> None:
        try:
            await self._db.execute("DELETE FROM bot_state WHERE key = ?", (key,))
        except sqlite3.Error as err:
            raise self._error("delete", err) from err

    async def ping(self) -> None:
        try:
            await self._db.execute_fetchall("SELECT count(*) FROM bot_state WHERE key = ''")
        except (sqlite3.Error, ValueError) as err:  # ValueError: the connection is closed
            raise self._error("ping", err) from err

    async def close(self) -> None:
        await self._db.close()

    def describe(self) -> str:
        return f"sqlite at {self._path.resolve()}"

    def _error(self, action: str, err: Exception) -> StorageError:
        return StorageError(f"sqlite {action} failed on {self._path}: {err}")
