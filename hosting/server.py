"""The web app around a bot: its routes, its lifecycle, and how it is served.

``web_app(settings, bot_factory)`` is the aiohttp application: ``POST /api/messages`` (the adapter), ``/healthz``
and ``/readyz``. Nothing is opened until the app starts: a cleanup context opens the storage, builds the bot and
its states with ``bot_factory``, wires the adapter and the turn pipeline, and closes everything when the app
stops. ``run(app, settings)`` serves it the way ``python app.py`` does; gunicorn's aiohttp worker serves the same
app (``app:create_app``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from botbuilder.core import Bot, BotState
from botframework.connector.auth import ClaimsIdentity

from .adapter import StateBotAdapter
from .auth import BotAuthentication, OnDemandUserTokenClient
from .http import RequestPolicy, error_response
from .logs import log_text
from .replies import ReplySender
from .serving import guard_event_loop, server_options
from .settings import ConfigError, HostSettings
from .states import TurnStates, check_states
from .storage import ExpiryPolicy, StateStorage, StorageError, build_storage, storage_deadline
from .telemetry import Telemetry, start_telemetry

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log every request (azure-core with all headers, aiohttp access lines) at INFO/DEBUG.
CHATTY_LOGGERS = ("aiohttp", "azure", "urllib3", "msal", "msrest", "botbuilder", "botframework", "asyncio")
MESSAGES_PATH = "/api/messages"
READY_TIMEOUT_SECONDS = 3.0
#: A failing readiness check logs one WARNING at most this often, with the number of failures in between.
READY_LOG_INTERVAL_SECONDS = 60.0
EXPIRY_BATCH = 100
EXPIRY_INTERVAL_SECONDS = 300.0
#: /readyz writes a small record under this prefix (never a channel's key: those start with the channel id).
HEARTBEAT_PREFIX = "_heartbeat/"


@dataclass(frozen=True, slots=True)
class BotRuntime:
    """Everything a request needs, built once per app start: ``app[RUNTIME]``. The adapter is how a bot starts
    turns itself: ``await app[RUNTIME].adapter.continue_conversation(reference, callback)`` sends a proactive
    message (``hosting.adapter`` says what it does and raises)."""

    storage: StateStorage
    adapter: StateBotAdapter
    authentication: BotAuthentication


@dataclass(frozen=True, slots=True)
class ReadyResult:
    """The outcome of one readiness check; ``reason`` is a short code, safe to show anyone."""

    ready: bool
    reason: str = ""


class Readiness:
    """/readyz's check of the store (a heartbeat written and read back), run at most once per ``interval`` seconds
    in this process. Calls in between get the last result; calls that arrive during a check wait for that one.

    The endpoint is public: without this every call was a write (thousands per second for anyone who asks). A
    failure's detail (paths, the store's own message) goes to the log, at most once per ``log_interval`` seconds
    with the number of failures in between; the answer carries only a reason code. The attributes can be changed
    on a running app (tests set ``interval`` and ``log_interval``).
    """

    def __init__(self, interval: float, log_interval: float = READY_LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.log_interval = log_interval
        #: How many checks really ran (each one a write to the store).
        self.checks = 0
        self._last: ReadyResult | None = None
        self._checked_at = -math.inf
        self._running: asyncio.Task[ReadyResult] | None = None
        self._failures = 0
        self._unreported = 0
        self._reported_at = -math.inf

    async def result(self, storage: StateStorage) -> ReadyResult:
        """The store's readiness, checked now unless a check ended less than ``interval`` seconds ago."""
        if self._last is not None and time.monotonic() - self._checked_at < self.interval:
            return self._last
        if self._running is None:
            self._running = asyncio.create_task(self._check(storage))
        # Shielded: a caller that goes away does not cancel the check the others wait for.
        return await asyncio.shield(self._running)

    async def _check(self, storage: StateStorage) -> ReadyResult:
        try:
            self.checks += 1
            try:
                with storage_deadline(READY_TIMEOUT_SECONDS):
                    await asyncio.wait_for(_write_heartbeat(storage), READY_TIMEOUT_SECONDS)
            except (StorageError, TimeoutError) as err:
                timed_out = isinstance(err, TimeoutError) or isinstance(err.__cause__, TimeoutError)
                result = ReadyResult(False, "storage_timeout" if timed_out else "storage_error")
                self._failed(str(err) or f"no answer within {READY_TIMEOUT_SECONDS:g} s")
            else:
                result = ReadyResult(True)
                self._passed()
            self._last, self._checked_at = result, time.monotonic()
            return result
        finally:
            self._running = None

    def _failed(self, detail: str) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._reported_at < self.log_interval:
            self._unreported += 1
            return
        logger.warning(
            "readiness check failed: %s (%d more failed checks since the last report)",
            log_text(detail, 500),
            self._unreported,
        )
        self._reported_at, self._unreported = now, 0

    def _passed(self) -> None:
        if self._failures:
            logger.info("readiness check passes again, after %d failed checks", self._failures)
        self._failures = self._unreported = 0
        self._reported_at = -math.inf


SETTINGS = web.AppKey("settings", HostSettings)
TELEMETRY = web.AppKey("telemetry", Telemetry)
RUNTIME = web.AppKey("runtime", BotRuntime)
READINESS = web.AppKey("readiness", Readiness)


def configure_logging(settings: HostSettings) -> None:
    """Log to stderr at ``LOG_LEVEL``, the same under ``python app.py``, gunicorn and tests.

    A handler is added only when nobody configured logging yet (pytest and embedding apps keep theirs).
    Third-party loggers stay at WARNING unless ``LOG_LEVEL=DEBUG``.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(settings.log_level_number)
    library_level = logging.DEBUG if settings.log_level == "DEBUG" else max(logging.WARNING, settings.log_level_number)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def bot_authentication(settings: HostSettings) -> BotAuthentication:
    """Our token validation and outgoing token (``hosting/auth.py``); the caller must ``await close()`` it."""
    return BotAuthentication(settings)


#: Builds the bot and the states its turns load and save, on the opened storage.
BotFactory = Callable[[StateStorage], tuple[Bot, Sequence[BotState]]]
BOT_FACTORY = web.AppKey("bot_factory", BotFactory)


async def _runtime_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    storage = await build_storage(settings.store, ExpiryPolicy(settings.conversation_ttl, settings.user_ttl))
    logger.info("state storage: %s", storage.describe())
    telemetry = app.get(TELEMETRY)
    if telemetry is not None:
        storage.tracer = telemetry.tracer
    if storage.name == "memory":
        logger.warning("STORAGE=memory: every user's state is lost when the process stops; use it for tests only")
    authentication = bot_authentication(settings)
    restore_loop = guard_event_loop(asyncio.get_running_loop())
    try:
        async with ReplySender.new_session() as session:
            bot, states = app[BOT_FACTORY](storage)
            check_states(bot, states)
            adapter = StateBotAdapter(
                authentication,
                RequestPolicy.from_settings(settings),
                bot,
                TurnStates.of(states),
                ReplySender(session, authentication.outgoing_token),
                retries=settings.turn_retries,
                remembered=settings.redelivery_memory,
                telemetry=telemetry,
                user_tokens=OnDemandUserTokenClient(
                    functools.partial(authentication.create_user_token_client, ClaimsIdentity({}, True)),
                    settings.oauth_url,
                ),
            )
            app[RUNTIME] = BotRuntime(storage=storage, adapter=adapter, authentication=authentication)
            cleanup = asyncio.create_task(_remove_expired_records(storage)) if storage.expiry_cleanup else None
            try:
                yield
            finally:
                if cleanup is not None:
                    cleanup.cancel()
    finally:
        try:
            await asyncio.wait_for(storage.delete([heartbeat_key()]), READY_TIMEOUT_SECONDS)
        except (StorageError, TimeoutError) as err:
            logger.warning("could not remove this process's heartbeat record: %s", err)
        restore_loop()
        await authentication.close()
        await storage.close()
        if telemetry is not None:
            await asyncio.to_thread(telemetry.flush)


async def _remove_expired_records(storage: StateStorage) -> None:
    """Delete expired records in small batches, now and every few minutes (sqlite and memory; Cosmos expires
    items natively; on blob and table expired records only read as absent)."""
    while True:
        removed = 0
        try:
            while (batch := await storage.remove_expired(EXPIRY_BATCH)) > 0:
                removed += batch
                await asyncio.sleep(0.1)  # let turns through between batches
            if storage.compact_pending:  # a deletion whose compaction failed: finish it now
                await storage.compact()
                storage.compact_pending = False
                logger.info("compacted the store after an earlier deletion")
        except StorageError as err:
            logger.warning("store maintenance (expired records, compaction) failed; tried again later: %s", err)
        if removed:
            logger.info("removed %d expired records", removed)
        await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)


async def messages(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return await runtime.adapter.handle(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def heartbeat_key() -> str:
    """This process's heartbeat record: ``_heartbeat/<host>-<pid>``, one per process, overwritten each time."""
    return f"{HEARTBEAT_PREFIX}{socket.gethostname()}-{os.getpid()}"


async def _write_heartbeat(storage: StateStorage) -> None:
    key = heartbeat_key()
    await storage.write({key: {"at": datetime.now(UTC).isoformat(), "e_tag": "*"}})
    await storage.read([key])


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store takes a write and reads it back: a full disk, a read-only, damaged or deleted database
    and an unreachable service all answer 503, so the instance leaves the load balancer's rotation.

    ``{"status": "ready"|"unavailable", "storage": <backend>}``, and on 503 a ``reason`` code (``storage_error``,
    ``storage_timeout``); the details are in the log. Checked at most once per ``READY_CHECK_SECONDS`` (``Readiness``).
    """
    storage = request.app[RUNTIME].storage
    result = await request.app[READINESS].result(storage)
    if not result.ready:
        return web.json_response(
            {"status": "unavailable", "storage": storage.name, "reason": result.reason}, status=503
        )
    return web.json_response({"status": "ready", "storage": storage.name})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; an unexpected one is logged with its traceback and never shown."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return error_response(err.status, err.reason.lower().replace(" ", "_"), err.reason)
    except Exception:
        logger.exception("unhandled error serving %s %s", log_text(request.method, 16), log_text(request.path, 100))
        return error_response(500, "internal_error", "the bot hit an unexpected error; it has been logged")


def web_app(settings: HostSettings, bot_factory: BotFactory, *, telemetry: Telemetry | None = None) -> web.Application:
    """The aiohttp application serving the bot ``bot_factory`` builds (with its states) on the storage the
    settings choose. Logging is set up from the settings, and telemetry when they have an Application Insights
    connection string (``telemetry``: other providers instead, as tests and the benchmark use)."""
    configure_logging(settings)
    # Before the application is built: the aiohttp server instrumentation changes web.Application.
    if telemetry is None:
        telemetry = start_telemetry(settings)
    else:
        telemetry.instrument_http()
    if not settings.auth_enabled and not _is_loopback(settings.host):
        logger.warning(
            "HOST=%s without MicrosoftAppId: anybody who can reach this port can talk to the bot as any user",
            settings.host,
        )
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[BOT_FACTORY] = bot_factory
    if telemetry is not None:
        app[TELEMETRY] = telemetry
    app[READINESS] = Readiness(settings.ready_check_seconds)
    app.cleanup_ctx.append(_runtime_context)
    app.router.add_post(MESSAGES_PATH, messages)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for ``host:port`` (``port`` 0: any free port); ``OSError`` when it cannot be had."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def refuse_to_start(err: ConfigError) -> int:
    """Log bad settings as one line (no traceback) and return the exit code of a refused start-up, 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logger.error("cannot start: %s", err)
    return 2


def serve(
    app: Awaitable[web.Application], settings: HostSettings, sock: socket.socket, announce: Callable[[], None]
) -> int:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM; the exit code (2: the storage could not be opened).

    ``announce`` logs where to connect, once the storage is open (never before a start-up that then fails).
    """

    async def announced() -> web.Application:
        application = await app

        async def on_startup(_: web.Application) -> None:
            announce()

        application.on_startup.append(on_startup)  # after the storage context, which was registered first
        return application

    try:
        web.run_app(announced(), sock=sock, print=None, access_log=None, **server_options(settings))
    except (StorageError, ConfigError) as err:
        logger.error("cannot start: %s", err)
        return 2
    return 0


def run(app: Awaitable[web.Application], settings: HostSettings) -> int:
    """Serve ``app`` on the settings' HOST and PORT until SIGINT/SIGTERM, as ``python app.py`` does; the exit code
    (2: the port or the storage could not be had). Says where to point the Emulator once the storage is open."""
    configure_logging(settings)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as err:
        logger.error("cannot start: HOST=%s PORT=%s cannot be bound: %s", settings.host, settings.port, err)
        return 2
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host

    def announce() -> None:
        logger.info("bot listening; Emulator URL: http://%s:%s%s", shown_host, port, MESSAGES_PATH)
        if not settings.auth_enabled:
            logger.info("MicrosoftAppId is empty: leave App ID and password empty in the Emulator")

    return serve(app, settings, sock, announce)
