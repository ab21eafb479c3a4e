"""Full-turn latency and throughput of the real bot, per storage backend, measured in one run.

Each backend gets a fresh ``python app.py`` process (as a user runs it) on a free port. A load generator in this
process keeps ``--concurrency`` conversations busy, each with its own user, sending ordinary messages in
``expectReplies`` mode (the reply comes back in the HTTP response, so no channel is needed). Every measured
turn is a full turn: request checks, one read of UserState and ConversationState, the echo, and the e_tag-checked
write of ConversationState.

Blob and Table run against Azurite on this machine (started here, in memory). Only figures from the same run are
comparable; the ratios against sqlite are what the issues' targets speak of.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from tests.processes import BotProcess

logger = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    backend: str
    concurrency: int
    turns: int
    seconds: float
    turns_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int


def _activity(user: str, text: str) -> dict[str, object]:
    return {
        "type": "message",
        "text": text,
        "channelId": "bench",
        "serviceUrl": "http://127.0.0.1:9/",
        "deliveryMode": "expectReplies",
        "from": {"id": user},
        "recipient": {"id": "bot"},
        "conversation": {"id": f"conversation-of-{user}"},
    }


async def _turn(session: aiohttp.ClientSession, url: str, user: str, text: str) -> tuple[float, bool]:
    started = time.perf_counter()
    async with session.post(url, json=_activity(user, text)) as response:
        body = await response.json()
    elapsed = time.perf_counter() - started
    ok = response.status == 200 and bool(body.get("activities"))
    return elapsed, ok


async def measure(backend: str, url: str, concurrency: int, turns: int, warmup: int) -> Result:
    users = [f"bench-user-{i}" for i in range(concurrency)]
    async with aiohttp.ClientSession() as session:
        for user in users:  # make every user known, so measured turns are echoes
            await _turn(session, url, user, "hello")
            await _turn(session, url, user, f"Name {user[-3:]}")
        latencies: list[float] = []
        errors = 0
        per_user = (warmup + turns) // concurrency

        async def run(user: str) -> None:
            nonlocal errors
            for i in range(per_user):
                elapsed, ok = await _turn(session, url, user, f"message {i}")
                if i >= warmup // concurrency:
                    latencies.append(elapsed)
                    errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(run(user) for user in users))
        seconds = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return Result(
        backend=backend,
        concurrency=concurrency,
        turns=len(latencies),
        seconds=round(seconds, 3),
        turns_per_second=round(len(latencies) / seconds, 1),
        p50_ms=round(cuts[49] * 1000, 2),
        p95_ms=round(cuts[94] * 1000, 2),
        p99_ms=round(cuts[98] * 1000, 2),
        errors=errors,
    )


async def bench_backend(backend: str, workdir: Path, settings: dict[str, str], args: argparse.Namespace) -> Result:
    bot = BotProcess(workdir / f"bot-{backend}.log", STORAGE=backend, **settings)
    try:
        url = await bot.start()
        result = await measure(backend, url, args.concurrency, args.turns, args.warmup)
    finally:
        await bot.kill()
    logger.info("%s", result)
    return result


async def main(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        azurite = None
        if {"blob", "table"} & set(args.backends):
            from tests.azurite import Azurite

            azurite = Azurite(workdir)
            azurite.start()
        try:
            for backend in args.backends:
                settings = {"SQLITE_PATH": str(workdir / "bench.sqlite3")}
                if backend in ("blob", "table"):
                    assert azurite is not None
                    settings["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
                results.append(await bench_backend(backend, workdir, settings, args))
        finally:
            if azurite is not None:
                azurite.stop()
    return results


def report(results: list[Result]) -> str:
    baseline = next((r for r in results if r.backend == "sqlite"), None)
    lines = [
        f"{'backend':<8} {'c':>3} {'turns':>6} {'turns/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'p50 vs sqlite':>14}"
    ]
    for r in results:
        ratio = f"{r.p50_ms / baseline.p50_ms:.2f}x" if baseline else "-"
        lines.append(
            f"{r.backend:<8} {r.concurrency:>3} {r.turns:>6} {r.turns_per_second:>9.1f} {r.p50_ms:>8.2f} "
            f"{r.p95_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>6} {ratio:>14}"
        )
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["memory", "sqlite", "blob", "table"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--turns", type=int, default=1600, help="measured turns per backend")
    parser.add_argument("--warmup", type=int, default=160, help="turns per backend before measuring")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = asyncio.run(main(args))
    table = report(results)
    logger.info("\n%s", table)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (RESULTS / f"{stamp}.txt").write_text(table + "\n")


if __name__ == "__main__":
    cli()
