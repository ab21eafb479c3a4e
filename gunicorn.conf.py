"""gunicorn's settings for this bot; gunicorn reads this file from the working directory by itself.

    make serve                       # WEB_CONCURRENCY workers (default 2) on HOST:PORT from the settings
    gunicorn --bind=0.0.0.0:$PORT --worker-class aiohttp.GunicornWebWorker app:create_app   # App Service

Options given on the command line win over the ones here.
"""

import logging
import sys

from config import ConfigError, settings_from_environment
from hosting import gunicorn_keepalive, worker_count_problem

logger = logging.getLogger("gunicorn.conf")

try:
    _settings = settings_from_environment()
except ConfigError as _err:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logger.error("cannot start: %s", _err)
    sys.exit(2)

wsgi_app = "app:create_app"
worker_class = "aiohttp.GunicornWebWorker"
bind = [f"[{_settings.host}]:{_settings.port}" if ":" in _settings.host else f"{_settings.host}:{_settings.port}"]
workers = _settings.web_concurrency
graceful_timeout = 20
# The aiohttp worker uses this as the time a connection may take to send a request head (see hosting/serving.py).
keepalive = gunicorn_keepalive(_settings)
accesslog = None
# gunicorn 27 opens a control socket in ~/.gunicorn: two servers on one machine would share it.
control_socket_disable = True


def on_starting(server: object) -> None:
    """Refuse a worker count the storage cannot serve (memory is per process)."""
    problem = worker_count_problem(_settings, server.cfg.workers)  # type: ignore[attr-defined]
    if problem:
        server.log.error("cannot start: %s", problem)  # type: ignore[attr-defined]
        sys.exit(2)
