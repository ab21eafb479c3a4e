"""The web app: ``create_app(settings)`` builds it, ``main()`` runs it. The engine behind both is ``hosting``.

    python app.py                                                     # what `make run` does
    gunicorn 'app:create_app' --worker-class aiohttp.GunicornWebWorker  # App Service (and `make serve`)

Nothing is created at import time: the storage is opened, and the bot built on it (``bots.create_bot``), when the
app starts, and closed when it stops.
"""

from __future__ import annotations

import sys

MISSING_DEPENDENCIES_HINT = "cannot start: {module} is not installed; run `make run`, which installs them"

try:
    from aiohttp import web

    import hosting
    from bots import create_bot
    from config import ConfigError, Settings, settings_from_environment
except ModuleNotFoundError as missing:
    # `python app.py` outside the virtual environment: one line that says what to do, not a traceback.
    if __name__ != "__main__":
        raise
    sys.stderr.write(MISSING_DEPENDENCIES_HINT.format(module=missing.name) + "\n")
    raise SystemExit(2) from None


async def create_app(
    settings: Settings | None = None, *, bot_factory: hosting.BotFactory = create_bot
) -> web.Application:
    """The aiohttp application. Without ``settings`` they are read from the environment and ``.env``.

    A coroutine because gunicorn's aiohttp worker takes ``app:create_app`` only as one. ``bot_factory`` builds the
    bot and its states on the opened storage (tests pass a variant of the bot).
    """
    return hosting.web_app(settings or settings_from_environment(), bot_factory)


def main() -> int:
    """Serve the bot on HOST:PORT until Ctrl+C; the exit code (2: it could not start, and says why in one line)."""
    try:
        settings = settings_from_environment()
    except ConfigError as err:
        return hosting.refuse_to_start(err)
    return hosting.run(create_app(settings), settings)


if __name__ == "__main__":
    sys.exit(main())
