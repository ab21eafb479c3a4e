"""What the contract suite cannot see about SQLite: the file, other processes, and damaged databases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from hosting.storage import CorruptRecordError, SqliteStorage, StorageError, storage_deadline
from hosting.storage import sqlite as sqlite_module
from tests.support.processes import ROOT


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


async def test_a_record_that_is_not_utf8_is_damaged_alone_not_a_store_failure(tmp_path: Path) -> None:
    """sqlite3 fails the whole read of a TEXT value that is not UTF-8 ("Could not decode to UTF-8"), which would
    make every turn of that user an outage. It is a damaged record of its own key, moved aside byte for byte."""
    path = tmp_path / "bot.sqlite3"
    storage = await SqliteStorage.open(path)
    try:
        await storage.write({"good": {"v": 1}, "bad": {"v": 2}})
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE bot_state SET document = CAST(? AS TEXT) WHERE key = 'bad'", (b'{"v": "\xff"}',))

        with pytest.raises(CorruptRecordError, match="not valid UTF-8") as caught:
            await storage.read(["good", "bad"])
        assert caught.value.key == "bad"
        assert (await storage.read(["good"]))["good"]["v"] == 1
        moved_to = await storage.move_aside("bad")

        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute("SELECT key, CAST(document AS BLOB) FROM bot_state WHERE key != 'good'").fetchall()
        assert rows == [(moved_to, b'{"v": "\xff"}')]
        assert await storage.read(["bad"]) == {}
    finally:
        await storage.close()


async def test_two_processes_incrementing_one_record_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    increments = 60

    async def worker() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.sqlite_worker",
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


async def test_the_connection_thread_runs_jobs_in_order_and_answers_a_queue_in_one_wake_up() -> None:
    """Jobs queued while the thread is busy run back to back, in order, and come back in one loop callback;
    an exception reaches its own caller only; a job whose caller gave up before it started is not run."""
    thread = sqlite_module._ConnectionThread("test")
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold() -> str:
        started.set()
        release.wait(5)
        return "held"

    def job(name: str) -> str:
        ran.append(name)
        if name == "bad":
            raise ValueError(name)
        return name

    loop = asyncio.get_running_loop()
    wake_ups = 0
    original = loop.call_soon_threadsafe

    def counting(*arguments: object, **options: object) -> object:
        nonlocal wake_ups
        wake_ups += 1
        return original(*arguments, **options)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        first = thread.run(hold)
        await asyncio.to_thread(started.wait, 5)
        wake_ups = 0
        queued = [thread.run(job, name) for name in ("a", "b", "bad", "skipped", "c")]
        queued[3].cancel()
        release.set()
        assert await first == "held"
        results = await asyncio.gather(*queued, return_exceptions=True)
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        thread.stop()
    assert results[:2] == ["a", "b"]
    assert isinstance(results[2], ValueError)
    assert isinstance(results[3], asyncio.CancelledError)
    assert results[4] == "c"
    assert ran == ["a", "b", "bad", "c"]
    assert wake_ups == 2  # one for the job that held the thread, one for the five queued behind it


async def test_opening_a_new_database_waits_while_another_process_is_setting_it_up(tmp_path: Path) -> None:
    """gunicorn's workers open the file together on a first start. While one of them is inside a write on the
    still rollback-journal file, SQLite refuses another's switch to WAL at once, without its busy wait: the
    other must wait its turn instead of failing to boot. The racing worker is a plain connection holding a write
    transaction for 0.3 s."""
    path = tmp_path / "fresh.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        opening = asyncio.create_task(SqliteStorage.open(path))
        await asyncio.sleep(0.3)
        assert not opening.done()
        other.execute("COMMIT")
        storage = await opening
    finally:
        other.close()
    try:
        await storage.write({"k": {"v": 1}})
        assert (await storage.read(["k"]))["k"]["v"] == 1
    finally:
        await storage.close()


async def test_a_database_deleted_while_open_refuses_every_change_and_is_not_recreated(tmp_path: Path) -> None:
    """SQLite goes on writing to a deleted file (it still has it open), so turns would succeed into a file that is
    gone when the process stops. Every change is refused instead, naming the file; nothing appears at the path."""
    path = tmp_path / "bot.sqlite3"
    storage = await SqliteStorage.open(path)
    try:
        await storage.write({"k": {"v": 1}})
        path.unlink()

        for change in (
            lambda: storage.write({"k": {"v": 2, "e_tag": "*"}}),
            lambda: storage.delete(["k"]),
            lambda: storage.move_aside("k"),
            lambda: storage.remove_expired(),
            storage.compact,
        ):
            with pytest.raises(StorageError, match="was deleted or moved away while the bot was running") as caught:
                await change()
            assert str(path) in str(caught.value)
        assert not path.exists()
    finally:
        await storage.close()


async def test_a_database_replaced_by_another_file_refuses_every_write_and_leaves_both_alone(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    storage = await SqliteStorage.open(path)
    try:
        await storage.write({"k": {"v": 1}})
        other = await SqliteStorage.open(tmp_path / "other.sqlite3")
        await other.write({"theirs": {"v": "other"}})
        await other.close()
        before = (tmp_path / "other.sqlite3").read_bytes()
        (tmp_path / "other.sqlite3").replace(path)  # e.g. a backup moved into place while the bot runs

        with pytest.raises(StorageError, match="was replaced by another file while the bot was running"):
            await storage.write({"k": {"v": 2, "e_tag": "*"}})

        assert path.read_bytes() == before
    finally:
        await storage.close()
    assert path.read_bytes() == before


async def test_a_database_moved_away_and_back_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    aside = tmp_path / "aside.sqlite3"
    storage = await SqliteStorage.open(path)
    try:
        await storage.write({"k": {"v": 1}})
        path.rename(aside)
        with pytest.raises(StorageError, match="deleted or moved away"):
            await storage.write({"k": {"v": 2, "e_tag": "*"}})
        aside.rename(path)

        await storage.write({"k": {"v": 3, "e_tag": "*"}})

        assert (await storage.read(["k"]))["k"]["v"] == 3
    finally:
        await storage.close()


async def test_an_empty_file_is_refused_by_name_and_left_untouched(tmp_path: Path) -> None:
    """An empty file at SQLITE_PATH (a failed copy, a truncated backup) used to start as an empty store."""
    path = tmp_path / "bot.sqlite3"
    path.touch()

    with pytest.raises(StorageError) as caught:
        await SqliteStorage.open(path)

    message = str(caught.value)
    assert f"SQLITE_PATH={path} is an empty file (0 bytes)" in message
    assert "delete the empty file" in message
    assert "\n" not in message
    assert path.stat().st_size == 0
    assert os.listdir(tmp_path) == [path.name]


async def test_processes_opening_an_empty_file_at_once_all_refuse_it_and_leave_it_untouched(tmp_path: Path) -> None:
    """Each opener looks at the file's write lock to tell an empty file from one being created; their looks must not
    pass for a creator to each other (one of them would then make a database in the operator's empty file)."""
    path = tmp_path / "bot.sqlite3"
    path.touch()

    async def worker() -> tuple[int | None, bytes]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.sqlite_worker",
            str(path),
            "counter",
            "1",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        return process.returncode, err

    results = await asyncio.gather(*(worker() for _ in range(4)))

    for returncode, err in results:
        assert returncode != 0
        assert b"is an empty file (0 bytes)" in err
    assert path.stat().st_size == 0
    assert os.listdir(tmp_path) == [path.name]


async def test_processes_creating_a_new_database_at_once_never_show_it_empty(tmp_path: Path) -> None:
    """Four processes open a database that does not exist yet, at the same moment, as gunicorn's workers do on a
    first start. None of them is refused for finding an empty file, the file is never seen with 0 bytes, no
    update is lost and no temporary file is left behind."""
    path = tmp_path / "fresh.sqlite3"
    increments = 20
    sizes: set[int] = set()
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            with contextlib.suppress(FileNotFoundError):
                sizes.add(path.stat().st_size)

    async def worker() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.sqlite_worker",
            str(path),
            "counter",
            str(increments),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return int(out)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        await asyncio.gather(*(worker() for _ in range(4)))
    finally:
        watching.clear()
        watcher.join()

    assert sizes, "the watcher never saw the file"
    assert 0 not in sizes
    storage = await SqliteStorage.open(path)
    try:
        assert (await storage.read(["counter"]))["counter"]["count"] == 4 * increments
    finally:
        await storage.close()
    assert set(os.listdir(tmp_path)) <= {path.name, f"{path.name}-wal", f"{path.name}-shm"}


async def test_an_operation_given_up_at_its_deadline_is_never_run_later(tmp_path: Path) -> None:
    """A turn's write queued behind a job that holds the connection (another turn waiting for a lock) fails at the
    turn's deadline, and does not happen afterwards behind the user's back."""
    storage = await SqliteStorage.open(tmp_path / "bot.sqlite3")
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5)

    try:
        held = storage._thread.run(hold)
        await asyncio.to_thread(started.wait, 5)
        with storage_deadline(0.05), pytest.raises(StorageError, match=r"write gave no answer within"):
            await storage.write({"k": {"v": 1}})
        release.set()
        await held

        assert await storage.read(["k"]) == {}
    finally:
        release.set()
        await storage.close()


async def test_a_locked_database_is_waited_for_within_the_deadline_then_given_up(tmp_path: Path) -> None:
    """Another connection holds the write lock: a write waits for it (SQLite's own busy handler is off; the
    connection's thread retries), no longer than the caller's deadline, and succeeds once the lock is free."""
    path = tmp_path / "bot.sqlite3"
    storage = await SqliteStorage.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with storage_deadline(0.3), pytest.raises(StorageError, match="locked"):
            await storage.write({"k": {"v": 1}})

        waiting = asyncio.ensure_future(storage.write({"k": {"v": 2}}))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        other.execute("COMMIT")
        await asyncio.wait_for(waiting, 5)

        assert (await storage.read(["k"]))["k"]["v"] == 2
    finally:
        other.close()
        await storage.close()


async def test_answers_go_back_before_a_job_that_has_to_wait_for_a_lock() -> None:
    """A read queued in front of a write that must wait for another process's lock is answered at once, not when
    the write is done: the write is first tried without waiting, and only when it would wait are the answers
    collected so far sent."""
    thread = sqlite_module._ConnectionThread("test")
    first_started, release_first, waiting, release_waiting = (threading.Event() for _ in range(4))
    tries: list[bool] = []

    def hold(started: threading.Event, release: threading.Event) -> str:
        started.set()
        release.wait(5)
        return "done"

    def must_wait(*, patient: bool) -> str:
        tries.append(patient)
        if not patient:
            raise sqlite_module._WouldWait
        return hold(waiting, release_waiting)

    try:
        first = thread.run(hold, first_started, release_first)
        await asyncio.to_thread(first_started.wait, 5)
        quick = thread.run(str.upper, "quick")
        slow = thread.run(must_wait, patient=True)
        release_first.set()
        await asyncio.to_thread(waiting.wait, 5)

        assert await asyncio.wait_for(quick, 5) == "QUICK"
        assert not slow.done()
        release_waiting.set()
        assert await slow == "done"
        assert tries == [False, True]
        assert await first == "done"
    finally:
        release_first.set()
        release_waiting.set()
        thread.stop()
