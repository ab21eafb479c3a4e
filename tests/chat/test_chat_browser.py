"""The bot in a real browser: Web Chat 4.18.1 in Debian's Chromium, against ``python -m chat``.

Everything is real: the chat server process (the bot plus the local Direct Line endpoint), Web Chat's own
bundle, Chromium, an sqlite file, and the bot's replies travelling back over its ``serviceUrl``. Without
Chromium or Web Chat's bundle the test is skipped with the reason; under ``CI=true`` that is a failure. What the
bot says is matched through tests/support/words.py and profile.py (the sample's own texts, as Web Chat typesets
them), so the test follows the wording and the profile's questions wherever they change.
"""

from __future__ import annotations

import re
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from bots.commands import ASK_NAME, COMMANDS, STORED_TEXT
from bots.state_bot import WELCOME_TEXT
from chat.server import WEBCHAT_JS
from dialogs.profile_dialog import SAVED_TEXT, SUMMARY_TEXT
from tests.chat.webchat_page import WebChatPage, chromium_missing_reason, launch, skip_or_fail
from tests.support import profile, words
from tests.support.processes import ROOT, BotProcess
from tests.support.words import as_typeset

ARTIFACTS = ROOT / "artifacts"
SCREENSHOT = ARTIFACTS / "chat-browser.png"
URL_PREFIX = "/v3/attachments/"
#: The profile's questions answered with their suggested-action buttons; the others are typed (or uploaded).
PRESSED = {"transport", "wants_age", "confirm"}


class ChatProcess(BotProcess):
    """``python -m chat`` in its own process; the page URL is read from its start-up log."""

    ARGS = ("-m", "chat")
    URL_PATTERN = re.compile(r"chat in your browser: (http://\S+)")


def tiny_png(path: Path, size: int = 48) -> Path:
    """Write a small, valid RGB PNG (an orange disc on blue) to ``path``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def pixel(x: int, y: int) -> bytes:
        inside = (x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2
        return bytes((240, 128, 32)) if inside else bytes((43, 87, 154))

    rows = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(size)) for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    reason = chromium_missing_reason()
    if reason is None and not WEBCHAT_JS.is_file():
        reason = f"{WEBCHAT_JS} is missing: run `make webchat` to fetch Web Chat"
    if reason is not None:
        skip_or_fail(reason)
    async with async_playwright() as playwright:
        chromium = await launch(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def chat_server(tmp_path: Path) -> AsyncIterator[ChatProcess]:
    process = ChatProcess(tmp_path / "chat.log", STORAGE="sqlite", SQLITE_PATH=str(tmp_path / "state" / "bot.sqlite3"))
    try:
        yield process
    finally:
        await process.kill()


@pytest.mark.timeout(240)
async def test_a_whole_conversation_in_web_chat_survives_a_restart(
    browser: Browser, chat_server: ChatProcess, tmp_path: Path
):
    user = f"browser-{uuid.uuid4().hex[:8]}"
    picture = tiny_png(tmp_path / "me.png")
    url = await chat_server.start()
    context = await browser.new_context(viewport={"width": 520, "height": 760})
    chat = WebChatPage(await context.new_page())
    await chat.open(f"{url}?user={user}")

    welcome = await chat.wait_for(f"{as_typeset(WELCOME_TEXT)}.*{as_typeset(ASK_NAME)}")
    assert all(command in welcome for command in COMMANDS)  # the commands
    assert "Ada" in await chat.say("Ada", expect=as_typeset(words.thanks("Ada")))
    echoed = words.in_browser(words.echo_pattern(name="Ada", text="hello from a browser", loose=True))
    echo = words.echo_of(await chat.say("hello from a browser", expect=echoed), loose=True)
    assert echo is not None
    assert (echo.number, echo.channel) == (2, "directline")

    # The profile, question by question: each answer is followed by the next question (the last by "saved").
    given = {  # a pressed answer is its button's label
        "transport": "Bicycle",
        "name": "Ada Lovelace",
        "wants_age": "Yes",
        "age": "36",
        "picture": picture,
        "confirm": "Yes",
    }
    questions = profile.asked(**given)
    for number, answer in enumerate(profile.answers(**given)):
        expect = as_typeset(questions[number].asks if number < len(questions) else SAVED_TEXT)
        answered = questions[number - 1].key if number else None
        if isinstance(answer, Path):
            await chat.upload(answer, expect=expect)
        elif answered in PRESSED:
            await chat.press(str(answer), expect=expect)
        else:
            await chat.say(str(answer), expect=expect)
        if number + 1 == len(questions):  # the summary came before the last question
            summary = await chat.wait_for(as_typeset(SUMMARY_TEXT))
            assert all(part in summary for part in ("Bicycle", "Ada Lovelace", "36", "me.png"))
            # The user's own upload is shown as an image fetched from the Direct Line endpoint.
            assert await chat.loaded_image_count(URL_PREFIX) >= 1

    shown = await chat.say("show", expect=as_typeset(STORED_TEXT))
    assert all(answer in shown for answer in ("Bicycle", "Ada Lovelace", "36", "me.png"))
    # ...and the bot's answer to "show" carries the picture again: one more image, loaded.
    await chat.page.wait_for_function(
        f"() => [...document.querySelectorAll('.webchat__bubble__content img[src*=\"{URL_PREFIX}\"]')]"
        ".filter(i => i.naturalWidth > 0).length >= 2",
        timeout=20_000,
    )
    # Web Chat, Direct Line and the pictures all come from the local server: no CDN.
    assert f"{url}webchat.js" in chat.requested
    assert chat.foreign_requests(url) == []
    ARTIFACTS.mkdir(exist_ok=True)
    await chat.scroll_to_bottom()
    await chat.page.screenshot(path=str(SCREENSHOT))
    await context.close()

    assert await chat_server.stop() == 0
    url = await chat_server.start()
    context = await browser.new_context(viewport={"width": 520, "height": 760})
    chat = WebChatPage(await context.new_page())
    await chat.open(f"{url}?user={user}")

    assert "Ada Lovelace" in await chat.wait_for(as_typeset(words.welcome_back("Ada Lovelace")))
    still = words.in_browser(words.echo_pattern(name="Ada Lovelace", text="still me", loose=True))
    echo = words.echo_of(await chat.say("still me", expect=still), loose=True)
    assert echo is not None
    assert echo.number == 1  # a new conversation counts from one again
    await context.close()
    assert "Traceback" not in chat_server.log_path.read_text()
