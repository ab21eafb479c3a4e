"""What every benchmark server shares: bind a free port on 127.0.0.1 and announce the URL on stdout.

The harness reads the ``listening on <url>`` line, so no server needs a port chosen in advance. This module
imports only the standard library and aiohttp: the Agents SDK port runs it from another virtual environment.
"""

from __future__ import annotations

import logging
import socket
import sys

from aiohttp import web

LISTENING = "listening on"
MESSAGES_PATH = "/api/messages"


def run(app: web.Application) -> None:
    """Serve ``app`` on 127.0.0.1 and a port the OS picks; log the messages URL first."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    logging.getLogger("bench.serve").warning("%s http://127.0.0.1:%d%s", LISTENING, port, MESSAGES_PATH)
    web.run_app(app, sock=sock, print=None, access_log=None)
