"""The bot as real processes: restarts keep state, bad settings stop start-up cleanly, gunicorn serves it."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import aiohttp
import pytest

from bots.commands import STORED_TEXT
from data_models import UserProfile
from dialogs import describe_profile
from dialogs.profile_dialog import SAVED_TEXT
from tests.support import profile, words
from tests.support.azurite import scratch_environment
from tests.support.channel import Conversation, FakeChannel
from tests.support.processes import BotProcess, run_app_expecting_failure


@pytest.fixture(params=["sqlite", "blob", "table"])
async def bot(request: pytest.FixtureRequest, tmp_path: Path):
    """``python app.py`` on a durable backend: an sqlite file, or a fresh container / table on Azurite."""
    settings = {"STORAGE": request.param, "SQLITE_PATH": str(tmp_path / "state" / "bot.sqlite3")}
    if request.param in ("blob", "table"):
        settings |= scratch_environment(request.getfixturevalue("azurite"), request.param)
    process = BotProcess(tmp_path / "bot.log", **settings)
    try:
        yield process
    finally:
        await process.kill()


async def test_the_name_survives_a_real_restart(bot: BotProcess, http: aiohttp.ClientSession, channel: FakeChannel):
    first = Conversation(http, await bot.start(), channel)
    await first.join()
    await first.say("Ada")
    assert await bot.stop() == 0

    second = Conversation(http, await bot.start(), channel, user_id=first.user_id)

    assert (await second.join()).texts == [words.welcome_back("Ada")]
    words.expect_echo((await second.say("still me")).text, "still me", "Ada")


async def test_the_profile_dialog_resumes_after_a_restart(
    bot: BotProcess, http: aiohttp.ClientSession, channel: FakeChannel
):
    """Stopped while the profile dialog waits for the name (tests/support/profile.py walks its questions); the
    restarted process takes the answer and goes on with the next question, to the end."""
    given = {"transport": "Bicycle", "name": "Ada B.", "age": "40"}
    talk = Conversation(http, await bot.start(), channel)
    await talk.say("hi")
    await talk.say("Ada")
    *answers, confirmation = profile.answers(**given)
    reply = ""
    for answer, question in zip(answers, profile.asked(**given), strict=True):
        reply = (await talk.say(answer)).text
        assert question.asks in reply, (question.key, reply)
        if question.key == "name":  # the dialog now waits for the name
            assert await bot.stop() == 0
            talk.bot_url = await bot.start()

    stored = describe_profile(UserProfile(name="Ada B.", transport="Bicycle", age=40))
    assert stored in reply, "the summary has every answer, those from before the restart too"
    assert (await talk.say(confirmation)).texts == [SAVED_TEXT]
    assert (await talk.say("show")).texts == [f"{STORED_TEXT}\n\n{stored}"]


async def test_sigterm_stops_the_bot_cleanly(tmp_path: Path):
    bot = BotProcess(tmp_path / "bot.log", STORAGE="sqlite", SQLITE_PATH=str(tmp_path / "bot.sqlite3"))
    await bot.start()

    assert await bot.stop() == 0
    assert "Traceback" not in bot.log_path.read_text()


class ImportTimedBot(BotProcess):
    """``python -X importtime app.py``: every module the process imports, when it imports it, goes to its log."""

    ARGS = ("-X", "importtime", "app.py")


IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.MULTILINE)
AZURE_SDKS = ("azure.storage", "azure.data", "azure.cosmos", "azure.identity")


async def test_a_bot_on_sqlite_never_imports_an_azure_sdk(tmp_path: Path):
    """Each backend's module (and SDK) is imported by its opener only (hosting/storage/registry.py). A bot on sqlite, up
    and answering (so its store is open), has imported none of the Azure SDKs. (``azure.core`` comes with msrest,
    which botbuilder needs, so it does not count.)"""
    bot = ImportTimedBot(tmp_path / "bot.log", STORAGE="sqlite", SQLITE_PATH=str(tmp_path / "bot.sqlite3"))
    await bot.start()
    assert await bot.stop() == 0

    imported = IMPORTED.findall(bot.log_path.read_text())
    # the log is complete:
    assert {"config", "hosting.storage.registry", "hosting.storage.sqlite", "botbuilder.core"} <= set(imported)
    assert [name for name in imported if name.startswith(AZURE_SDKS)] == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"PORT": "99999"}, "PORT=99999 is out of range"),
        ({"STORAGE": "floppy"}, "STORAGE='floppy'"),
        ({"LOG_LEVEL": "shout"}, "LOG_LEVEL='SHOUT'"),
        ({"MicrosoftAppPassword": "x"}, "MicrosoftAppId is empty"),
    ],
)
def test_bad_settings_stop_start_up_with_one_clear_message(settings: dict[str, str], message: str) -> None:
    result = run_app_expecting_failure(**settings)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unwritable_sqlite_path_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    result = run_app_expecting_failure(SQLITE_PATH=str(tmp_path / "file" / "bot.sqlite3"))

    assert result.returncode == 2
    assert "SQLITE_PATH=" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_database_stops_start_up_naming_the_file_and_is_not_touched(tmp_path: Path) -> None:
    database = tmp_path / "bot.sqlite3"
    garbage = b"this is not an sqlite database\n" * 200
    database.write_bytes(garbage)

    result = run_app_expecting_failure(SQLITE_PATH=str(database))

    assert result.returncode == 2
    assert str(database) in result.stderr
    assert "bot listening" not in result.stderr  # never announced before a start-up that then fails
    assert "Traceback" not in result.stderr
    assert database.read_bytes() == garbage


def test_an_empty_database_file_stops_start_up_with_one_line_and_is_not_touched(tmp_path: Path) -> None:
    database = tmp_path / "bot.sqlite3"
    database.touch()

    result = run_app_expecting_failure(SQLITE_PATH=str(database))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"cannot start: SQLITE_PATH={database} is an empty file (0 bytes)" in lines[0]
    assert "delete the empty file" in lines[0]
    assert database.stat().st_size == 0
    assert sorted(tmp_path.iterdir()) == [database]


def test_a_port_in_use_is_reported_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_app_expecting_failure(PORT=str(port), SQLITE_PATH=str(tmp_path / "bot.sqlite3"))

    assert result.returncode == 2
    assert f"PORT={port} cannot be bound" in result.stderr
    assert "Traceback" not in result.stderr
