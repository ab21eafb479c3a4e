"""What a newcomer runs first, run for real: README's curl example against ``python app.py``, and ``python app.py``
without the dependencies installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bots.commands import ASK_NAME
from config import Settings
from dialogs import GREET_BACK
from tests.support.processes import ROOT, BotProcess, bot_environment

README = ROOT / "README.md"
SECTION = "## Without the Emulator: curl"
MAKE_RUN_ADDRESS = f"{Settings().host}:{Settings().port}"  # README's example talks to `make run`'s defaults
# What README says the two replies are (it quotes the sample's texts, so rewording them means updating README).
WELCOME_END = ASK_NAME
GREETED_BACK = f"{GREET_BACK} {ASK_NAME}"
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)$")


def readme_section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else None]


def curl_block(section: str) -> str:
    [block] = re.findall(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    return block


def json_documents(text: str) -> list[Any]:
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


async def test_the_readme_curl_example_works_as_written(tmp_path: Path) -> None:
    """The block from README.md, run by bash with only the port changed (``make run``'s default port may be
    taken here)."""
    section = readme_section()
    block = curl_block(section)
    assert MAKE_RUN_ADDRESS in block
    assert WELCOME_END in section, "README says what the replies are"
    assert GREETED_BACK in section
    bot = BotProcess(tmp_path / "bot.log", SQLITE_PATH=str(tmp_path / "bot.sqlite3"))
    try:
        url = await bot.start()
        port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        curl = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            block.replace(MAKE_RUN_ADDRESS, f"127.0.0.1:{port}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(curl.communicate(), 60)
    finally:
        exit_code = await bot.stop()
    assert curl.returncode == 0, err.decode()

    welcome, greeted = json_documents(out.decode())

    [welcome_reply] = welcome["activities"]
    assert welcome_reply["text"].endswith(WELCOME_END)
    assert welcome_reply["inputHint"] == "expectingInput"
    [greeting_reply] = greeted["activities"]
    assert greeting_reply["text"] == GREETED_BACK
    assert greeting_reply["inputHint"] == "expectingInput"

    assert exit_code == 0
    lines = [match.groupdict() for line in bot.log_path.read_text().splitlines() if (match := LOG_LINE.match(line))]
    turn_lines = [line for line in lines if line["logger"] == "hosting.adapter"]
    assert [(line["level"], line["message"].split(":")[0]) for line in turn_lines] == [
        ("INFO", "turn conversationUpdate@curl/curl-1"),
        ("INFO", "turn message@curl/curl-1"),
    ]
    assert all(line["logger"] in ("hosting.server", "hosting.adapter") for line in lines), lines
    assert "hello" not in bot.log_path.read_text().lower()


def test_without_the_dependencies_app_py_says_how_to_get_them() -> None:
    """``-S`` leaves out every site-packages folder (the venv's too): Python as a fresh clone finds it."""
    result = subprocess.run(
        [sys.executable, "-S", "app.py"],
        cwd=ROOT,
        env=bot_environment(PORT="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "cannot start: aiohttp is not installed; run `make run`, which installs them\n"
