"""What a deployed bot shows of itself through OpenTelemetry: a span per turn and per storage call, the HTTP
spans around them, and the turn metrics. Off (and free) unless ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.

``start_telemetry(settings)`` configures the Azure Monitor distro (azure-monitor-opentelemetry) once per process
(each gunicorn worker builds its app, and so its exporters, itself) and returns a ``Telemetry``; ``web_app``
calls it before it builds the aiohttp application, because the aiohttp server instrumentation changes
``web.Application`` itself. Tests and the benchmark pass a ``Telemetry`` of their own, on SDK providers with
in-memory exporters, and nothing leaves the process.

What the spans carry, and what they never carry:

* ``turn`` (or ``proactive turn``): outcome, attempts, e_tag conflicts, delivery mode, channel, activity type,
  replies and how many were not delivered, the conversation as log lines show it (``logs.short_id``) and the user
  as a pseudonym (a hash: ``pseudonym``). Never message text, never a raw user id.
* ``<backend> <action>`` (``sqlite read``, ``blob write``...): one per storage operation, with the backend and the
  action; never a key (keys hold user ids). A failure sets the span's status and ``error.type``, not the message.
* The HTTP server span of ``POST /api/messages`` is the parent of the turn; the reply POSTs to the channel are
  aiohttp client spans whose URL keeps the host and drops the path (it holds conversation and activity ids).

Metrics (``bot.*``), with ``outcome``, ``channel`` and ``activity.type`` attributes (channels and types the Bot
Framework does not define are counted as ``other``, so a caller cannot grow the number of series): ``bot.turns``,
``bot.turn.duration`` (s, from the authenticated request to its answer), ``bot.turn.conflicts`` (e_tag conflicts
turns met and retried), ``bot.redeliveries`` and ``bot.replies.undelivered``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botbuilder.schema import Activity, ActivityTypes
from botframework.connector import Channels
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .logs import short_id
from .storage.base import in_dropped_trace

if TYPE_CHECKING:
    import yarl
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from .settings import HostSettings

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "hosting"
#: Outcomes of a turn that are not failures (the pipeline's ``TurnOutcome`` values).
SUCCEEDED = frozenset({"ok", "redelivered"})
KNOWN_CHANNELS = frozenset(value for name, value in vars(Channels).items() if not name.startswith("_"))
KNOWN_TYPES = frozenset(value for name, value in vars(ActivityTypes).items() if not name.startswith("_"))
PSEUDONYM_LENGTH = 16
#: Resource detectors the distro runs: App Service's reads environment variables only. The Azure VM detector
#: calls the instance-metadata address, which App Service does not have (and a test must never call).
RESOURCE_DETECTORS = "otel,azure_app_service"
#: Log records exported to Application Insights: warnings and errors. Each turn's INFO line says what its span
#: says; it stays in the log stream.
EXPORTED_LOG_LEVEL = logging.WARNING
#: How long the shutdown waits for buffered telemetry to leave (gunicorn's graceful timeout is 20 s): each
#: provider's flush, and all of them together.
FLUSH_TIMEOUT_MILLIS = 5_000
FLUSH_TIMEOUT_SECONDS = 8.0
#: Loggers of the telemetry pipeline itself (the exporter, the HTTP stack it sends with): their records stay in the
#: log stream and are never exported, or an export that fails would log, export that, fail again, and so on.
UNEXPORTED_LOGGERS = ("azure.monitor", "azure.core", "opentelemetry", "urllib3", "requests")


def pseudonym(identifier: object) -> str:
    """A stable stand-in for a user id in telemetry: the first characters of its SHA-256, never the id itself."""
    return hashlib.sha256(str(identifier).encode("utf-8", "surrogatepass")).hexdigest()[:PSEUDONYM_LENGTH]


def reply_url(url: yarl.URL) -> str:
    """A channel URL as the aiohttp client spans record it: scheme and host; the path holds conversation ids."""
    return str(url.origin())


@dataclass(slots=True)
class TurnRecord:
    """What the adapter tells about a turn once it has been answered (``Telemetry.turn`` yields it)."""

    outcome: str = ""
    attempts: int = 0
    conflicts: int = 0
    replies: int = 0
    undelivered: int = 0
    status: int = 0


@dataclass
class Telemetry:
    """The engine's tracer and instruments, on the given providers (None: the global ones, which the Azure
    Monitor distro sets). ``flush`` pushes out what is buffered; ``undo`` removes the HTTP instrumentation."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    #: Called by ``flush`` (the providers' ``force_flush``), set by whoever made the providers.
    flushers: list[Callable[[], object]] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=self.tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=self.meter_provider)
        self._turns = meter.create_counter("bot.turns", unit="{turn}", description="Turns served, by outcome")
        self._duration = meter.create_histogram(
            "bot.turn.duration", unit="s", description="Time a turn took: state, bot and the delivery of its replies"
        )
        self._conflicts = meter.create_counter(
            "bot.turn.conflicts", unit="{conflict}", description="e_tag conflicts turns met (each one re-ran)"
        )
        self._redeliveries = meter.create_counter(
            "bot.redeliveries", unit="{activity}", description="Activities a channel delivered again, not re-applied"
        )
        self._undelivered = meter.create_counter(
            "bot.replies.undelivered", unit="{activity}", description="Replies the channel did not take"
        )

    def instrument_http(self) -> None:
        """Trace aiohttp's server (every ``web.Application`` built from now on) and client sessions (the replies
        to channels), on this telemetry's providers. Once per process: an instrumented library is left as is."""
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        for instrumentor, options in (
            (AioHttpServerInstrumentor(), {}),
            (AioHttpClientInstrumentor(), {"meter_provider": self.meter_provider, "url_filter": reply_url}),
        ):
            if instrumentor.is_instrumented_by_opentelemetry:
                continue
            with warnings.catch_warnings():
                # The server instrumentation subclasses web.Application, which aiohttp discourages with a warning.
                warnings.filterwarnings("ignore", "Inheritance class _InstrumentedApplication", DeprecationWarning)
                instrumentor.instrument(tracer_provider=self.tracer_provider, **options)
            self._undo.append(instrumentor.uninstrument)

    def undo(self) -> None:
        """Remove the HTTP instrumentation this telemetry added (tests)."""
        while self._undo:
            self._undo.pop()()

    def flush(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> bool:
        """Export what is buffered now (at shutdown: the distro's exporters would otherwise wait for their batch),
        for at most ``timeout`` seconds: the export runs in a daemon thread, so an exporter that hangs can neither
        hold up the shutdown nor keep the process alive. False: it did not finish in time (logged)."""
        done = threading.Event()

        def flush_all() -> None:
            for flush in self.flushers:
                try:
                    flush()
                except Exception:  # a failing exporter must not stop the others
                    logger.warning("telemetry could not be flushed", exc_info=True)
            done.set()

        threading.Thread(target=flush_all, name="telemetry-flush", daemon=True).start()
        if not done.wait(timeout):
            logger.warning("telemetry: buffered traces and metrics not sent within %g s; dropped", timeout)
            return False
        return True

    @contextmanager
    def turn(self, name: str, activity: Activity) -> Iterator[TurnRecord]:
        """A span for one turn of ``activity``, current while the turn runs (storage and reply spans are its
        children); the caller fills the yielded record, which becomes the span's attributes and the metrics."""
        record = TurnRecord()
        started = time.perf_counter()
        # In a trace the sampler dropped, the turn's span would be dropped too: none is made. Metrics are not sampled.
        scope = (
            contextlib.nullcontext()
            if in_dropped_trace()
            else self.tracer.start_as_current_span(
                name, kind=SpanKind.INTERNAL, record_exception=False, set_status_on_exception=False
            )
        )
        with scope as span:
            try:
                yield record
            finally:
                channel = _known(activity.channel_id, KNOWN_CHANNELS)
                kind = _known(activity.type, KNOWN_TYPES)
                if span is not None:
                    self._record(span, record, activity, channel, kind)
                self._count(record, channel, kind, time.perf_counter() - started)

    def _count(self, record: TurnRecord, channel: str, kind: str, seconds: float) -> None:
        attributes = {"outcome": record.outcome or "error", "channel": channel, "activity.type": kind}
        self._turns.add(1, attributes)
        self._duration.record(seconds, attributes)
        if record.conflicts:
            self._conflicts.add(record.conflicts, attributes)
        if record.outcome == "redelivered":
            self._redeliveries.add(1, attributes)
        if record.undelivered:
            self._undelivered.add(record.undelivered, attributes)

    @staticmethod
    def _record(span: Span, record: TurnRecord, activity: Activity, channel: str, kind: str) -> None:
        if not span.is_recording():
            return
        conversation = activity.conversation.id if activity.conversation is not None else ""
        user = activity.from_property.id if activity.from_property is not None else ""
        span.set_attributes(
            {
                "bot.turn.outcome": record.outcome or "error",
                "bot.turn.attempts": record.attempts,
                "bot.turn.conflicts": record.conflicts,
                "bot.delivery_mode": activity.delivery_mode or "normal",
                "bot.channel": channel,
                "bot.activity.type": kind,
                "bot.conversation": short_id(conversation),
                "bot.user": pseudonym(user),
                "bot.replies": record.replies,
                "bot.replies.undelivered": record.undelivered,
            }
        )
        if record.status:  # a proactive turn answers no request
            span.set_attribute("http.response.status_code", record.status)
        if record.outcome not in SUCCEEDED or record.undelivered:
            span.set_status(Status(StatusCode.ERROR, record.outcome or "error"))


def _known(value: object, known: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in known else "other"


def start_telemetry(settings: HostSettings) -> Telemetry | None:
    """The Azure Monitor distro configured from ``settings`` (None when no connection string is set), once per
    process: a second app in the same process shares the first one's providers."""
    connection_string = settings.applicationinsights_connection_string
    if not connection_string:
        return None
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, SdkTracerProvider):
        from azure.monitor.opentelemetry import configure_azure_monitor

        os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", RESOURCE_DETECTORS)
        configure_azure_monitor(
            connection_string=connection_string,
            # aiohttp is instrumented below; none of the distro's other web frameworks or drivers run here.
            instrumentation_options={name: {"enabled": False} for name in ("django", "fastapi", "flask", "psycopg2")},
        )
        _limit_exported_logs()
        tracer_provider = trace.get_tracer_provider()
        logger.info("telemetry: sending traces, metrics and warnings to Application Insights")
    else:
        logger.info("telemetry: on the OpenTelemetry providers this process already has")
    providers = (tracer_provider, metrics.get_meter_provider(), get_logger_provider())
    telemetry = Telemetry(
        flushers=[
            functools.partial(provider.force_flush, FLUSH_TIMEOUT_MILLIS)
            for provider in providers
            if isinstance(provider, SdkTracerProvider | SdkMeterProvider | SdkLoggerProvider)
        ]
    )
    telemetry.instrument_http()
    return telemetry


def _exported(record: logging.LogRecord) -> bool:
    """Whether a log record may go to Application Insights: not one of the telemetry pipeline's own."""
    return not record.name.startswith(UNEXPORTED_LOGGERS)


def _limit_exported_logs() -> None:
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, LoggingHandler):
            handler.setLevel(EXPORTED_LOG_LEVEL)
            handler.addFilter(_exported)
            # Its flush starts a thread, which logging's own flush at interpreter exit cannot do (a traceback on
            # every stop); the app flushes the providers itself when it stops (``Telemetry.flush``).
            handler.flushOnClose = False
