"""The App Service startup command from the deployment template, run as App Service runs it.

App Service's Python image sets ``PORT`` and Oryx sets ``HOST=0.0.0.0``, then runs the startup command with a
shell. Here the template's exact command string goes through ``bash -c`` with ``PORT`` set to a free port, the
venv's gunicorn first on ``PATH`` (Oryx puts the built virtual environment there), and the app settings that
matter for a local run: sqlite in a temporary folder and ``LOG_LEVEL``. The command binds ``0.0.0.0`` as it does
on App Service; the test only ever connects to 127.0.0.1 and every ``serviceUrl`` is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.deploy.arm import template
from tests.support import words
from tests.support.channel import Conversation, FakeChannel
from tests.support.processes import ROOT, bot_environment, free_port

START_TIMEOUT = 60.0
# create_app's log format: "2026-11-25 22:30:01,123 LEVEL logger.name: message" (gunicorn's own lines differ).
APP_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): ", re.M)


def startup_command() -> str:
    site = next(r for r in template("existing-resource-group.json")["resources"] if r["type"] == "Microsoft.Web/sites")
    return site["properties"]["siteConfig"]["appCommandLine"]


def log_text(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_until_ready(
    http: aiohttp.ClientSession, base: str, process: asyncio.subprocess.Process, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.returncode is not None:
            pytest.fail(f"the startup command exited with {process.returncode}:\n{log_text(log)}")
        try:
            async with http.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    pytest.fail(f"the startup command did not become ready within {START_TIMEOUT} s:\n{log_text(log)}")


@pytest.mark.parametrize("log_level", ["DEBUG", "WARNING"])
async def test_the_template_startup_command_serves_a_turn_logs_at_log_level_and_stops_cleanly(
    log_level: str, tmp_path: Path, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    port = free_port()
    log = tmp_path / "app-service.log"
    env = bot_environment(
        PORT=str(port),
        HOST="0.0.0.0",
        STORAGE="sqlite",
        SQLITE_PATH=str(tmp_path / "data" / "bot.sqlite3"),
        LOG_LEVEL=log_level,
        WEB_CONCURRENCY="2",
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", startup_command(), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_until_ready(http, base, process, log)

        talk = Conversation(http, f"{base}/api/messages", channel, expect_replies=True)
        assert (await talk.say("hi")).texts == [words.stranger()]
        await talk.say("Ada")
        echoed = await talk.say("deployed")
        assert echoed.status == 200
        words.expect_echo(echoed.text, "deployed", "Ada")  # the sample's echo, worded by its template
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), 30)

    output = log_text(log)
    assert exit_code == 0, output
    assert "Traceback" not in output
    levels = {level for level, _ in APP_LOG_LINE.findall(output)}
    app_loggers = {name for level, name in APP_LOG_LINE.findall(output) if level in ("DEBUG", "INFO")}
    if log_level == "DEBUG":
        assert "DEBUG" in levels, output
        assert "hosting.server" in app_loggers, output  # the app's own INFO lines ("state storage: ...")
    else:
        assert "WARNING" in levels, output  # the app does log (HOST=0.0.0.0 without an app id is a warning)
        assert levels <= {"WARNING", "ERROR", "CRITICAL"}, output
