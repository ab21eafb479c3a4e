"""The chat server: ``create_app`` plus the local Direct Line endpoint and the Web Chat page, on 127.0.0.1 only.

The bot is the normal app, unchanged: the Direct Line endpoint reaches it over HTTP at ``/api/messages`` and
gives it its own origin as ``serviceUrl``, so the bot's replies come back over HTTP exactly
as they would from Azure. The Emulator can still talk to ``/api/messages`` of the same server.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from app import create_app
from config import ConfigError, Settings, settings_from_environment
from hosting.server import MESSAGES_PATH, bind, configure_logging, refuse_to_start, serve

from .directline import DirectLine

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
WEBCHAT_VERSION = "4.18.1"
# Filled by `make webchat` (npm pack, sha256 checked); git-ignored.
WEBCHAT_JS = ROOT / ".cache" / f"webchat-{WEBCHAT_VERSION}" / "webchat.js"
PAGE = Path(__file__).with_name("page.html")
LOOPBACK = "127.0.0.1"
PAGE_PATH = "/"
WEBCHAT_PATH = "/webchat.js"


class ChatError(Exception):
    """The chat server cannot start; the message says what to do."""


def local_settings(settings: Settings) -> Settings:
    """``settings`` fit for the local chat server: loopback only, no app credentials.

    Raises ``ChatError`` for any HOST other than 127.0.0.1: the Direct Line endpoint has no real
    authentication, so it must never be reachable from another machine. App credentials are dropped (with a
    warning) because Web Chat's messages are forwarded locally without a Bot Framework token.
    """
    if settings.host != LOOPBACK:
        raise ChatError(
            f"HOST={settings.host} refused: the chat server is for local development and listens on {LOOPBACK} "
            f"only; unset HOST or set HOST={LOOPBACK}"
        )
    if settings.app_id:
        logger.warning("MicrosoftAppId is ignored by the local chat server: the bot runs without credentials here")
        settings = replace(settings, app_id="", app_password="", app_tenant_id="")
    return settings


async def create_chat_app(settings: Settings, directline: DirectLine, webchat_js: Path = WEBCHAT_JS) -> web.Application:
    """The bot app from ``create_app`` with ``directline``'s routes and the Web Chat page added.

    ``directline.origin`` is where this server is reachable (``http://127.0.0.1:<port>``); it becomes the
    ``serviceUrl`` the bot replies to.
    """
    settings = local_settings(settings)
    if not directline.origin.startswith(f"http://{LOOPBACK}:"):
        raise ChatError(f"the Direct Line origin {directline.origin!r} is not on http://{LOOPBACK}")
    app = await create_app(settings)
    directline.add_routes(app)
    page = PAGE.read_text(encoding="utf-8").replace("{{WEBCHAT_VERSION}}", WEBCHAT_VERSION)

    async def chat_page(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def webchat_script(request: web.Request) -> web.StreamResponse:
        # FileResponse answers 404 by itself when the file is missing; main() refuses to start without it.
        return web.FileResponse(webchat_js, headers={"Content-Type": "text/javascript; charset=utf-8"})

    app.router.add_get(PAGE_PATH, chat_page)
    app.router.add_get(WEBCHAT_PATH, webchat_script)
    return app


def main() -> int:
    """Run the chat server; log the page's URL (the real port when ``PORT=0``)."""
    try:
        settings = settings_from_environment()
    except ConfigError as err:
        return refuse_to_start(err)
    configure_logging(settings)
    try:
        settings = local_settings(settings)
    except ChatError as err:
        logger.error("cannot start: %s", err)
        return 2
    if not WEBCHAT_JS.is_file():
        logger.error("cannot start: %s is missing; run `make webchat` (or `make chat`) to fetch Web Chat", WEBCHAT_JS)
        return 2
    try:
        sock = bind(LOOPBACK, settings.port)
    except OSError as err:
        logger.error("cannot start: %s:%s cannot be bound: %s", LOOPBACK, settings.port, err)
        return 2
    origin = f"http://{LOOPBACK}:{sock.getsockname()[1]}"

    def announce() -> None:
        logger.info("Emulator URL: %s%s", origin, MESSAGES_PATH)
        logger.info("chat in your browser: %s%s", origin, PAGE_PATH)

    return serve(create_chat_app(settings, DirectLine(origin)), settings, sock, announce)
