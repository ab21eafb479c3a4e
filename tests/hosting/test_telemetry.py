"""Telemetry (hosting/telemetry.py): a span per turn with the storage and reply spans under it, and the turn metrics.

The real app over real HTTP on sqlite, the real bot and the local fake channel; the spans and metrics go to the
OpenTelemetry SDK's in-memory exporter and reader (``Telemetry`` on providers of the test's own), so nothing
leaves the process. The Azure Monitor distro itself, as ``APPLICATIONINSIGHTS_CONNECTION_STRING`` turns it on, is
tested in a real process against a local ingestion endpoint: tests/hosting/test_telemetry_process.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from botbuilder.core import BotState
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace import SpanKind, StatusCode

import hosting
from bots import create_bot
from config import Settings
from hosting.state_keys import conversation_key
from hosting.storage import StateStorage
from hosting.telemetry import Telemetry, pseudonym
from tests.support import counting_bot, words
from tests.support.channel import BOT_ID, Conversation, FakeChannel, serving


@dataclass
class Observed:
    """What the app under test reported: its spans and its metrics."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def counted(self, name: str, **attributes: str) -> int:
        return sum(
            point.value
            for point in self.metric_points(name)
            if all(point.attributes.get(key) == value for key, value in attributes.items())
        )


@pytest.fixture
def observed() -> Iterator[tuple[Telemetry, Observed]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(tracer_provider, meter_provider, flushers=[tracer_provider.force_flush])
    try:
        yield telemetry, Observed(exporter, reader)
    finally:
        telemetry.undo()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest_asyncio.fixture
async def traced_bot(settings: Settings, observed: tuple[Telemetry, Observed]) -> AsyncIterator[str]:
    """The real bot on sqlite with telemetry on the test's providers; yields its messages URL."""
    async with serving(hosting.web_app(settings, create_bot, telemetry=observed[0])) as url:
        yield url


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [span for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id]


def _all_values(spans: list[ReadableSpan]) -> str:
    """Every name, attribute and event of the spans, as one text to search."""
    return json.dumps(
        [[span.name, dict(span.attributes or {}), [event.name for event in span.events]] for span in spans],
        default=str,
    )


async def test_one_turn_is_a_span_under_its_request_with_its_storage_calls_and_its_reply_under_it(
    traced_bot: str, http: aiohttp.ClientSession, channel: FakeChannel, observed: tuple[Telemetry, Observed]
) -> None:
    _, seen = observed
    talk = Conversation(http, traced_bot, channel, user_id="29:private-user-id", conversation_id="a:conversation-9")
    await talk.join()
    seen.exporter.clear()

    reply = await talk.say("Ada Lovelace")

    assert reply.texts == [words.thanks("Ada Lovelace")]
    spans = seen.spans()
    [request] = [span for span in spans if span.kind == SpanKind.SERVER and span.name == "POST /api/messages"]
    [turn] = seen.named("turn")
    assert turn.parent is not None
    assert turn.parent.span_id == request.context.span_id
    assert turn.attributes is not None
    assert {key: turn.attributes[key] for key in turn.attributes if key.startswith("bot.")} == {
        "bot.turn.outcome": "ok",
        "bot.turn.attempts": 1,
        "bot.turn.conflicts": 0,
        "bot.delivery_mode": "normal",
        "bot.channel": "emulator",
        "bot.activity.type": "message",
        "bot.conversation": "a:conversation-9",
        "bot.user": pseudonym("29:private-user-id"),
        "bot.replies": 1,
        "bot.replies.undelivered": 0,
    }
    assert turn.attributes["http.response.status_code"] == 201
    assert turn.status.status_code == StatusCode.UNSET
    under_turn = _children(spans, turn)
    assert [span.name for span in under_turn if span.kind == SpanKind.CLIENT and span.name.startswith("sqlite")] == [
        "sqlite read",
        "sqlite write",
    ], "the turn's one read and one write"
    [post] = [span for span in under_turn if span.name == "POST"]
    assert post.attributes is not None
    # The instrumentation's default (old) HTTP semantic conventions: http.url, http.status_code.
    assert post.attributes["http.url"] == channel.url.rstrip("/"), "the reply's URL without its path"
    assert post.attributes["http.status_code"] == 200
    text = _all_values(spans)
    for private in ("Ada Lovelace", "29:private-user-id", "private-user-id"):
        assert private not in text, f"{private!r} reached the telemetry"


async def test_turns_are_counted_by_outcome_and_redeliveries_and_undelivered_replies_have_their_own_counts(
    traced_bot: str, http: aiohttp.ClientSession, channel: FakeChannel, observed: tuple[Telemetry, Observed]
) -> None:
    _, seen = observed
    talk = Conversation(http, traced_bot, channel)
    await talk.say("hi")
    message = talk.activity(text="Grace")
    await talk.post(message)
    again = await talk.post(message)  # the channel's retry: remembered, nothing applied
    channel.fail_next = 1
    refused = await talk.post(talk.activity(text="this reply does not get through"))

    assert again.status == 201
    assert refused.status == 502
    labels = {"channel": "emulator", "activity.type": "message"}
    assert seen.counted("bot.turns", outcome="ok", **labels) == 3
    assert {type(point.attributes["outcome"]) for point in seen.metric_points("bot.turns")} == {str}
    assert seen.counted("bot.turns", outcome="redelivered", **labels) == 1
    assert seen.counted("bot.redeliveries", **labels) == 1
    assert seen.counted("bot.replies.undelivered", **labels) == 1
    assert sum(point.count for point in seen.metric_points("bot.turn.duration")) == 4
    [redelivered] = [span for span in seen.named("turn") if span.attributes["bot.turn.outcome"] == "redelivered"]
    assert [span.name for span in _children(seen.spans(), redelivered) if span.name.startswith("sqlite")] == [
        "sqlite read"
    ], "a redelivery reads and writes nothing"
    [undelivered] = [span for span in seen.named("turn") if span.attributes["bot.replies.undelivered"]]
    assert undelivered.status.status_code == StatusCode.ERROR
    assert undelivered.attributes["http.response.status_code"] == 502


async def test_a_conflict_that_re_ran_the_turn_is_counted_and_the_storage_span_says_why(
    settings: Settings, http: aiohttp.ClientSession, channel: FakeChannel, observed: tuple[Telemetry, Observed]
) -> None:
    """Another writer changes the conversation's record while the first attempt runs (the bot writes it itself,
    once, as a second process would): the save loses the e_tag race and the turn runs again."""
    telemetry, seen = observed

    class Racer(counting_bot.CountingBot):
        storage: StateStorage
        raced = False

        async def on_turn(self, turn_context: Any) -> None:
            if not Racer.raced and (turn_context.activity.text or "") == "race":
                Racer.raced = True
                key = conversation_key(turn_context.activity.channel_id, turn_context.activity.conversation.id)
                await Racer.storage.write({key: {"by": "another process", "e_tag": "*"}})
            await super().on_turn(turn_context)

    def factory(storage: StateStorage) -> tuple[Racer, tuple[BotState, ...]]:
        _, states = counting_bot.counting_bot(storage)
        Racer.storage = storage
        racer = Racer(*states)
        return racer, states

    async with serving(hosting.web_app(settings, factory, telemetry=telemetry)) as url:
        talk = Conversation(http, url, channel)
        await talk.say("hi")
        await talk.say("race")

    [turn] = [span for span in seen.named("turn") if span.attributes["bot.turn.attempts"] == 2]
    assert turn.attributes["bot.turn.conflicts"] == 1
    assert turn.attributes["bot.turn.outcome"] == "ok"
    assert seen.counted("bot.turn.conflicts", outcome="ok") == 1
    [failed_write] = [
        span
        for span in _children(seen.spans(), turn)
        if span.name == "sqlite write" and span.status.status_code == StatusCode.ERROR
    ]
    assert failed_write.attributes["error.type"] == "ETagConflictError"
    assert not failed_write.events, "no exception event: its message names a key, and keys hold user ids"


async def test_a_teams_turn_counts_its_channel_and_an_unknown_channel_or_type_is_counted_as_other(
    traced_bot: str, http: aiohttp.ClientSession, channel: FakeChannel, observed: tuple[Telemetry, Observed]
) -> None:
    """Channel ids and activity types come from the request: the metrics take only the Bot Framework's own, so
    nobody can grow the number of series by sending made-up ones."""
    _, seen = observed
    teams = Conversation(http, traced_bot, channel, channel_id="msteams", conversation_id="19:group@thread.v2")
    activity = teams.activity(text="<at>State Bot</at> hi")
    activity["channelData"] = {"tenant": {"id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}
    activity["entities"] = [{"type": "mention", "mentioned": {"id": BOT_ID}, "text": "<at>State Bot</at>"}]
    assert (await teams.post(activity)).status == 201
    odd = Conversation(http, traced_bot, channel, channel_id="my-channel-1")
    assert (await odd.post(odd.activity("x-made-up-type"))).status in (200, 201)

    assert seen.counted("bot.turns", channel="msteams", **{"activity.type": "message"}) == 1
    assert seen.counted("bot.turns", channel="other", **{"activity.type": "other"}) == 1
    [teams_turn] = [span for span in seen.named("turn") if span.attributes["bot.channel"] == "msteams"]
    assert teams_turn.attributes["bot.conversation"] == "19:group@thread.v2"


async def test_a_trace_the_sampler_drops_makes_no_spans_and_its_turns_are_still_counted(
    settings: Settings, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """Production samples traces (the distro keeps about 5 a second): in a dropped trace the turn and its storage
    calls do not even ask the sampler for a span, and the metrics, which are not sampled, count every turn."""
    asked: list[str] = []

    class DropAll(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
            asked.append(name)
            return ALWAYS_OFF.should_sample(parent_context, trace_id, name, *args, **kwargs)

        def get_description(self) -> str:
            return "DropAll"

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=DropAll())
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(tracer_provider, meter_provider)
    seen = Observed(exporter, reader)
    try:
        async with serving(hosting.web_app(settings, create_bot, telemetry=telemetry)) as url:
            talk = Conversation(http, url, channel)
            await talk.say("hi")
            await talk.say("Ada")
    finally:
        telemetry.undo()
        tracer_provider.shutdown()
        meter_provider.shutdown()

    assert seen.spans() == []
    assert asked.count("POST /api/messages") == 2
    # Inside the dropped requests: no turn span and no storage spans (outside them, the start-up expiry sweep and
    # the shutdown's heartbeat removal are roots of their own, and the reply's client span is aiohttp's).
    assert not {"turn", "sqlite read", "sqlite write"} & set(asked), asked
    assert seen.counted("bot.turns", outcome="ok") == 2


async def test_storage_calls_outside_a_turn_are_spans_too(
    traced_bot: str, http: aiohttp.ClientSession, observed: tuple[Telemetry, Observed]
) -> None:
    _, seen = observed
    async with http.get(traced_bot.replace("/api/messages", "/readyz")) as response:
        assert response.status == 200
    names = [span.name for span in seen.spans()]
    assert "sqlite write" in names
    assert "sqlite read" in names
    assert "GET /readyz" in names
    assert "turn" not in names


async def test_without_a_connection_string_nothing_is_traced_or_instrumented(
    settings: Settings, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    assert settings.applicationinsights_connection_string == ""
    app = hosting.web_app(settings, create_bot)
    assert not AioHttpServerInstrumentor().is_instrumented_by_opentelemetry
    async with serving(app) as url:
        talk = Conversation(http, url, channel)
        assert (await talk.say("hi")).texts == [words.stranger()]
        assert hosting.server.TELEMETRY not in app
        assert app[hosting.RUNTIME].storage.tracer is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("secret-looking-value-123", "is not a connection string"),
        ("IngestionEndpoint=https://x.in.applicationinsights.azure.com/", "is not a connection string"),
        ("InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://example.com/", "https://"),
    ],
)
def test_a_wrong_connection_string_stops_the_start_with_a_message_that_does_not_quote_it(
    value: str, problem: str
) -> None:
    from config import ConfigError, load_settings

    with pytest.raises(ConfigError) as raised:
        load_settings({"APPLICATIONINSIGHTS_CONNECTION_STRING": value})
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in str(raised.value)
    assert problem in str(raised.value)
    assert value not in str(raised.value)
    key = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    settings = load_settings({"APPLICATIONINSIGHTS_CONNECTION_STRING": key})
    assert settings.applicationinsights_connection_string == key
    assert key not in repr(settings)


def test_a_flush_that_hangs_is_given_up_after_its_timeout_and_the_shutdown_goes_on() -> None:
    """An exporter that never answers must not hold the stop (gunicorn kills a worker after 20 s)."""
    release = threading.Event()
    telemetry = Telemetry(TracerProvider(), MeterProvider(), flushers=[release.wait])
    try:
        assert telemetry.flush(timeout=0.2) is False
    finally:
        release.set()
    assert Telemetry(TracerProvider(), MeterProvider(), flushers=[lambda: None]).flush(timeout=5) is True
