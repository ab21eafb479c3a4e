"""Serving under load and abuse: slow clients and descriptor exhaustion, the same under ``python app.py`` and gunicorn.

* **Slow headers.** aiohttp 3.14 arms its keep-alive timer when a connection opens and closes a connection
  that has not delivered a complete request head when it fires (and an idle keep-alive connection likewise).
  ``server_options`` sets that timer to ``REQUEST_TIMEOUT_SECONDS``, so a client trickling its headers holds a
  descriptor for at most that long. gunicorn's aiohttp worker passes gunicorn's ``keepalive`` to the same
  parameter (gunicorn.conf.py sets it from the same setting).
* **Slow bodies** are bounded in ``hosting.http.read_json``.
* **Malformed HTTP.** aiohttp logs every request it cannot parse (a header over 8 KB, a bad request line) at
  ERROR with a traceback, so any client can fill the log. ``ProtocolErrorFilter`` turns those into one WARNING
  line per ``RESOURCE_LOG_INTERVAL`` with a count.
* **Descriptor exhaustion.** When ``accept()`` fails with EMFILE/ENFILE, asyncio stops accepting for a second,
  retries, and reports each failure to the loop's exception handler, which by default logs a traceback every
  time. ``guard_event_loop`` logs one line per ``RESOURCE_LOG_INTERVAL`` instead, with a count of the rest;
  accepting resumes by itself as soon as descriptors are free again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from .settings import HostSettings

logger = logging.getLogger(__name__)

RESOURCE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
RESOURCE_LOG_INTERVAL = 10.0


def server_options(settings: HostSettings) -> dict[str, Any]:
    """Keyword arguments for ``web.run_app`` / ``web.AppRunner``: bounded time to receive a request head."""
    return {"keepalive_timeout": settings.request_timeout_seconds}


def gunicorn_keepalive(settings: HostSettings) -> int:
    """gunicorn's ``keepalive`` (whole seconds), which its aiohttp worker uses as the same timer."""
    return max(1, math.ceil(settings.request_timeout_seconds))


class ResourceErrorFilter:
    """A loop exception handler: out-of-descriptor errors at most once per interval, everything else as before."""

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None) -> None:
        self._previous = previous
        self._last_logged = -math.inf
        self.suppressed = 0
        self.logged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS:
            now = time.monotonic()
            if now - self._last_logged < RESOURCE_LOG_INTERVAL:
                self.suppressed += 1
                return
            logger.error(
                "cannot accept connections: %s (%d more such errors since the last report); "
                "waiting for connections to close",
                error.strerror or errno.errorcode.get(error.errno or 0, "resource exhausted"),
                self.suppressed,
            )
            self._last_logged = now
            self.suppressed = 0
            self.logged += 1
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class ProtocolErrorFilter(logging.Filter):
    """On ``aiohttp.server``: a request the client malformed is one WARNING line now and then, never a traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._last_logged = -math.inf
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        now = time.monotonic()
        if now - self._last_logged < RESOURCE_LOG_INTERVAL:
            self.suppressed += 1
            return False
        record.msg = "refused a malformed HTTP request: %s %s (%d more since the last report)"
        record.args = (error.code, type(error).__name__, self.suppressed)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = None
        record.exc_text = None
        self._last_logged = now
        self.suppressed = 0
        return True


def guard_event_loop(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Install ``ResourceErrorFilter`` on ``loop`` and ``ProtocolErrorFilter`` on aiohttp's server logger.

    Returns the function that undoes both.
    """
    previous = loop.get_exception_handler()
    loop.set_exception_handler(ResourceErrorFilter(previous))
    server_logger = logging.getLogger("aiohttp.server")
    protocol_filter = ProtocolErrorFilter()
    server_logger.addFilter(protocol_filter)

    def restore() -> None:
        loop.set_exception_handler(previous)
        server_logger.removeFilter(protocol_filter)

    return restore
