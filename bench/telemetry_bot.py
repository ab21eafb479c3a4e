"""This bot with telemetry on, exported to memory: the benchmark's "telemetry on" row.

The same app ``python app.py`` serves (settings from the environment, the real bot), with a ``hosting.Telemetry``
on OpenTelemetry SDK providers instead of the Azure Monitor distro: spans batched by the SDK's
``BatchSpanProcessor`` into an in-memory exporter, and the metrics aggregated for an in-memory reader. Every trace
is sampled (the worst case), or, with ``BENCH_TRACES_PER_SECOND=5``, as many as the distro's default sampler keeps
(its ``RateLimitedSampler``, 5 traces a second). What is exported is counted and dropped
every second, so memory does not grow with the run; the counts are logged when the server stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator

from aiohttp import web
from azure.monitor.opentelemetry.exporter import RateLimitedSampler
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hosting
from bots import create_bot
from config import ConfigError, settings_from_environment

logger = logging.getLogger("bench.telemetry_bot")

DRAIN_SECONDS = 1.0


def main() -> int:
    try:
        settings = settings_from_environment()
    except ConfigError as err:
        return hosting.refuse_to_start(err)
    exporter = InMemorySpanExporter()
    per_second = os.environ.get("BENCH_TRACES_PER_SECOND", "")
    tracer_provider = TracerProvider(sampler=RateLimitedSampler(float(per_second))) if per_second else TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = hosting.Telemetry(tracer_provider, meter_provider, flushers=[tracer_provider.force_flush])

    async def drain(_: web.Application) -> AsyncIterator[None]:
        spans = 0

        async def forever() -> None:
            nonlocal spans
            while True:
                await asyncio.sleep(DRAIN_SECONDS)
                spans += len(exporter.get_finished_spans())
                exporter.clear()
                reader.get_metrics_data()

        task = asyncio.create_task(forever())
        yield
        task.cancel()
        tracer_provider.force_flush()
        spans += len(exporter.get_finished_spans())
        logger.warning("telemetry: %d spans exported to memory", spans)

    async def app() -> web.Application:
        application = hosting.web_app(settings, create_bot, telemetry=telemetry)
        application.cleanup_ctx.append(drain)
        return application

    return hosting.run(app(), settings)


if __name__ == "__main__":
    sys.exit(main())
