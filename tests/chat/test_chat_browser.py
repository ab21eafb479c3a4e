"""The bot in a real browser: Web Chat 4.18.1 in Debian's Chromium, against ``python -m chat``.

Everything is real: the chat server process (the bot plus the local Direct Line endpoint), Web Chat's own
bundle, Chromium, an sqlite file, and the bot's replies travelling back over its ``serviceUrl``. Without
Chromium or Web Chat's bundle the test is skipped with the reason; under ``CI=true`` that is a failure.
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

from chat.server import WEBCHAT_JS
from tests.chat.webchat_page import WebChatPage, chromium_missing_reason, launch, skip_or_fail
from tests.support.processes import ROOT, BotProcess

ARTIFACTS = ROOT / "artifacts"
SCREENSHOT = ARTIFACTS / "chat-browser.png"
URL_PREFIX = "/v3/attachments/"


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

    welcome = await chat.wait_for(r"welcome.*your name\?")
    assert all(command in welcome for command in ("help", "profile", "show", "forget"))  # the commands
    assert "Ada" in await chat.say("Ada", expect=r"thanks, ada")
    echo = await chat.say("hello from a browser", expect=r"sent: hello from a browser")
    assert "#2" in echo
    assert "directline" in echo

    await chat.say("profile", expect=r"get around")
    await chat.press("Bicycle", expect=r"what name should i store")
    await chat.say("Ada Lovelace", expect=r"tell me your age")
    await chat.press("Yes", expect=r"how old")
    await chat.say("36", expect=r"picture")
    summary = await chat.upload(picture, expect=r"here is what i.ve got")
    assert all(answer in summary for answer in ("Bicycle", "Ada Lovelace", "36", "me.png"))
    await chat.wait_for(r"save this profile")
    # The user's own upload is shown as an image fetched from the Direct Line endpoint.
    assert await chat.loaded_image_count(URL_PREFIX) >= 1
    await chat.press("Yes", expect=r"saved")

    shown = await chat.say("show", expect=r"stored about you")
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

    assert "Ada Lovelace" in await chat.wait_for(r"welcome back")
    echo = await chat.say("still me", expect=r"sent: still me")
    assert "#1" in echo  # a new conversation counts from one again
    await context.close()
    assert "Traceback" not in chat_server.log_path.read_text()
