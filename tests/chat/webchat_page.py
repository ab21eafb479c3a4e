"""Driving Bot Framework Web Chat 4.18.1 in Debian's Chromium with Playwright: every selector in one place.

Web Chat renders each message twice (the transcript and a screen-reader live region), so text lookups are
scoped to the bubbles, and suggested-action buttons to their toolbar. It typesets text (straight apostrophes become
curly ones, Markdown is rendered), so tests match bot texts with loose regular expressions on key words.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root needs --no-sandbox; the rest keep Chromium from reaching for the network or a GPU.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
TIMEOUT_MS = 20_000

BUBBLE = ".webchat__bubble__content"
BOT_BUBBLE = ".webchat__bubble:not(.webchat__bubble--from-user) .webchat__bubble__content"
USER_BUBBLE = ".webchat__bubble--from-user .webchat__bubble__content"
SEND_BOX = ".webchat__send-box-text-box__input"
SEND_BUTTON = 'button[title="Send"]'
FILE_INPUT = 'input[type="file"]'
STAGED_FILE = ".webchat__attachment-icon--checked"
SUGGESTED_ACTIONS = "Suggested actions"
TRANSCRIPT_IMAGE = f"{BUBBLE} img"
TRANSCRIPT_SCROLLER = ".webchat__basic-transcript__scrollable"


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        return f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run the browser test"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the calling test; under ``CI=true`` fail it, because CI must run the browser test."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


async def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless; Playwright never downloads a browser here."""
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)


class WebChatPage:
    """One Web Chat page: say things, press suggested actions, upload a file, wait for the bot's answers."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requested: list[str] = []
        page.on("request", lambda request: self.requested.append(request.url))

    def foreign_requests(self, origin: str) -> list[str]:
        """Every address the page asked for that is not on ``origin`` (``data:`` and ``blob:`` are local)."""
        local = (origin.rstrip("/") + "/", "data:", "blob:")
        return [url for url in self.requested if not url.startswith(local)]

    async def open(self, url: str) -> None:
        await self.page.goto(url)
        await self.page.locator(SEND_BOX).wait_for(timeout=TIMEOUT_MS)

    def bot_says(self, pattern: str) -> Locator:
        return self.page.locator(BOT_BUBBLE).filter(has_text=re.compile(pattern, re.IGNORECASE | re.DOTALL))

    async def count(self, pattern: str) -> int:
        return await self.bot_says(pattern).count()

    async def wait_for(self, pattern: str, after: int = 0) -> str:
        """Wait until the bot has said something matching ``pattern`` more than ``after`` times; its text."""
        reply = self.bot_says(pattern).nth(after)
        await reply.wait_for(timeout=TIMEOUT_MS)
        return await reply.inner_text()

    async def say(self, text: str, expect: str) -> str:
        """Type ``text``, send it, and wait for a new bot message matching ``expect``."""
        seen = await self.count(expect)
        await self.page.locator(SEND_BOX).fill(text)
        await self.page.locator(SEND_BOX).press("Enter")
        return await self.wait_for(expect, after=seen)

    async def press(self, button: str, expect: str) -> str:
        """Press a suggested action and wait for a new bot message matching ``expect``."""
        seen = await self.count(expect)
        toolbar = self.page.get_by_role("toolbar", name=SUGGESTED_ACTIONS)
        await toolbar.get_by_role("button", name=button, exact=True).click(timeout=TIMEOUT_MS)
        return await self.wait_for(expect, after=seen)

    async def upload(self, path: Path, expect: str) -> str:
        """Choose ``path`` in the file input, wait until Web Chat has staged it, send, wait for the bot."""
        seen = await self.count(expect)
        await self.page.locator(FILE_INPUT).set_input_files(str(path))
        await self.page.locator(STAGED_FILE).first.wait_for(timeout=TIMEOUT_MS)
        await self.page.locator(SEND_BUTTON).click(timeout=TIMEOUT_MS)
        return await self.wait_for(expect, after=seen)

    def images(self, url_part: str) -> Locator:
        """Images in the transcript whose address contains ``url_part``."""
        return self.page.locator(f'{TRANSCRIPT_IMAGE}[src*="{url_part}"]')

    async def loaded_image_count(self, url_part: str) -> int:
        """How many of those images the browser actually fetched and decoded."""
        return await self.images(url_part).evaluate_all("images => images.filter(i => i.naturalWidth > 0).length")

    async def scroll_to_bottom(self) -> None:
        """Show the newest messages (Web Chat follows new ones, but an image loading late can push them down)."""
        await self.page.locator(TRANSCRIPT_SCROLLER).evaluate(
            "element => { element.scrollTop = element.scrollHeight; }"
        )
        await self.page.wait_for_function(
            f"() => {{ const s = document.querySelector('{TRANSCRIPT_SCROLLER}');"
            " return s.scrollHeight - s.scrollTop - s.clientHeight < 2; }",
            timeout=TIMEOUT_MS,
        )
