"""What the contract suite cannot see about SQLite: the file, other processes, and damaged databases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

import pytest

from storage import CorruptRecordError, SqliteStorage, StorageError
from storage import sqlite as sqlite_module
from tests.processes import ROOT


async def test_the_database_uses_wal_and_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "bot.sqlite3"
    storage = await SqliteStorage.open(path)
    await storage.close()

    with contextlib.closing(sqlite3.connect(path)) as db, db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)


async def test_state_survives_closing_and_reopening(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(tmp_path / "bot.sqlite3")
    await storage.write({"k": {"v": 1}})
    await storage.close()

    reopened = await SqliteStorage.open(tmp_path / "bot.sqlite3")
    try:
        assert (await reopened.read(["k"]))["k"]["v"] == 1
    finally:
        await reopened.close()


async def test_a_file_that_is_not_a_database_is_refused_by_name_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    garbage = b"definitely not sqlite " * 100
    path.write_bytes(garbage)

    with pytest.raises(StorageError, match=r"bot\.sqlite3 is unusable") as caught:
        await SqliteStorage.open(path)

    assert str(path) in str(caught.value)
    assert path.read_bytes() == garbage


async def test_a_database_from_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA user_version = 7")
    before = path.read_bytes()

    with pytest.raises(StorageError, match="schema version 7"):
        await SqliteStorage.open(path)

    assert path.read_bytes() == before


async def test_an_undecodable_record_raises_naming_the_key_and_is_kept(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(tmp_path / "bot.sqlite3")
    try:
        await storage.write({"good": {"v": 1}, "bad": {"v": 2}})
        with contextlib.closing(sqlite3.connect(tmp_path / "bot.sqlite3")) as db, db:
            db.execute("UPDATE bot_state SET document = 'not json' WHERE key = 'bad'")

        with pytest.raises(CorruptRecordError, match="'bad'"):
            await storage.read(["good", "bad"])

        assert (await storage.read(["good"]))["good"]["v"] == 1
        with contextlib.closing(sqlite3.connect(tmp_path / "bot.sqlite3")) as db, db:
            assert db.execute("SELECT document FROM bot_state WHERE key = 'bad'").fetchone() == ("not json",)
    finally:
        await storage.close()


async def test_two_processes_incrementing_one_record_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    increments = 60

    async def worker() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.sqlite_worker",
            str(path),
            "counter",
            str(increments),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        return int(out)

    await (await SqliteStorage.open(path)).close()  # create the file and schema before the race
    await asyncio.gather(worker(), worker(), worker())

    storage = await SqliteStorage.open(path)
    try:
        assert (await storage.read(["counter"]))["counter"]["count"] == 3 * increments
    finally:
        await storage.close()


async def test_a_deleted_value_leaves_no_copy_in_the_database_or_its_wal_after_compact(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    wal = tmp_path / "bot.sqlite3-wal"
    secret = "Zebediah-Quuxleton-7f3a91"
    storage = await SqliteStorage.open(path)
    try:
        await storage.write({"other": {"v": "kept"}})
        item: dict[str, object] = {"name": secret, "age": 41}
        await storage.write({"emulator/users/u1": item})
        for age in (42, 43):  # several versions of the page, each a frame in the WAL
            item["age"] = age
            await storage.write({"emulator/users/u1": item})
        await storage.delete(["emulator/users/u1"])
        assert secret.encode() in wal.read_bytes()  # what the forget command used to leave behind

        await storage.compact()

        assert secret.encode() not in path.read_bytes()
        assert not wal.exists() or secret.encode() not in wal.read_bytes()
        assert (await storage.read(["other"]))["other"]["v"] == "kept"
    finally:
        await storage.close()


async def test_moving_a_damaged_record_aside_keeps_its_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    storage = await SqliteStorage.open(path)
    try:
        await storage.write({"bad": {"v": 1}})
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE bot_state SET document = '{\"half\": ' WHERE key = 'bad'")

        moved_to = await storage.move_aside("bad")

        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute("SELECT key, document FROM bot_state").fetchall()
        assert rows == [(moved_to, '{"half": ')]
    finally:
        await storage.close()


async def test_the_expiry_cleanup_finds_expired_records_through_an_index(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    await (await SqliteStorage.open(path)).close()

    with contextlib.closing(sqlite3.connect(path)) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT key FROM bot_state WHERE "  # noqa: S608 - the product's constant SQL
            f"{sqlite_module._EXPIRES_AT_SQL} <= ? LIMIT ?",
            (0, 10),
        ).fetchall()
    assert any("bot_state_expires_at" in row[-1] for row in plan), plan
