"""A separate process hammering one key of a shared SQLite file (used by test_sqlite_storage).

    python -m tests.support.sqlite_worker DB_PATH KEY INCREMENTS

Each increment is a read-modify-write with the e_tag, retried on conflict, exactly as a bot turn would be.
"""

from __future__ import annotations

import asyncio
import sys

from hosting.storage import ETagConflictError, SqliteStorage


async def increment(path: str, key: str, times: int) -> int:
    storage = await SqliteStorage.open(path)
    conflicts = 0
    try:
        for _ in range(times):
            while True:
                item = (await storage.read([key])).get(key, {"count": 0})
                item["count"] += 1
                try:
                    await storage.write({key: item})
                    break
                except ETagConflictError:
                    conflicts += 1
    finally:
        await storage.close()
    return conflicts


if __name__ == "__main__":
    db_path, record_key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.stdout.write(f"{asyncio.run(increment(db_path, record_key, count))}\n")
