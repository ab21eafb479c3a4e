"""Fill an sqlite state file with many users, copied from records a real turn wrote, in seconds.

The bot made the file (schema and all) and wrote the records of a few real users. ``populate`` takes every row
that belongs to one of them (rows whose key names the user or the user's conversation) and
inserts ``count`` copies with the user id replaced in every text column, in one transaction with
``executemany``. Nothing here knows the column list or the key format: they are read from the file, so the
records stay whatever the bot writes today.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

TABLE = "bot_state"
BATCH = 50_000


def populate(path: Path, user_id: str, conversation_id: str, count: int) -> int:
    """Add ``count`` users shaped like ``user_id`` (with their conversation ``conversation_id``) to the sqlite file
    at ``path``; return the rows added."""
    started = time.perf_counter()
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA cache_size = -200000")
        cursor = db.execute(
            f"SELECT * FROM {TABLE} WHERE instr(key, ?) > 0 OR instr(key, ?) > 0",  # noqa: S608
            (user_id, conversation_id),
        )
        columns = [description[0] for description in cursor.description]
        template = cursor.fetchall()
        if not template:
            raise RuntimeError(f"no record in {path} names {user_id!r}: the bot wrote nothing for that user")
        placeholders = ",".join("?" * len(columns))
        insert = f"INSERT INTO {TABLE} ({','.join(columns)}) VALUES ({placeholders})"  # noqa: S608
        db.execute("BEGIN")
        for row in template:  # one template row at a time, so keys arrive in order for the clustered index
            rows = _copies(row, user_id, conversation_id, count)
            while batch := _take(rows, BATCH):
                db.executemany(insert, batch)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    added = count * len(template)
    logger.info("added %d rows to %s in %.1f s", added, path.name, time.perf_counter() - started)
    return added


def _copies(row: tuple[object, ...], user_id: str, conversation_id: str, count: int) -> Iterator[tuple[object, ...]]:
    for number in range(count):
        user, conversation = f"stored-user-{number:08d}", f"stored-conversation-{number:08d}"
        yield tuple(
            value.replace(user_id, user).replace(conversation_id, conversation) if isinstance(value, str) else value
            for value in row
        )


def _take(rows: Iterator[tuple[object, ...]], size: int) -> list[tuple[object, ...]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            break
    return batch
