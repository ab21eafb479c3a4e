"""Turning the tallies into rows, the table printed by ``make bench`` and bench/RESULTS.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.loadgen import Tally

OFFICIAL, AGENTS = "official", "agents"


@dataclass(frozen=True)
class Options:
    concurrency: int = 8
    rounds: int = 6
    seconds: float = 2.0
    warmup: float = 1.5
    growth: tuple[int, int] = (1_000, 1_000_000)
    quick: bool = False
    reconnect_every: int = 5


@dataclass
class Row:
    label: str
    key: str
    turns: int = 0
    turns_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    server_cpu_ms: float = 0.0  #: server CPU per turn
    client_cpu_ms: float = 0.0  #: load generator CPU per turn
    client_core_share: float = 0.0  #: load generator CPU / wall time (1.0 = one core)
    store_cpu_ms: float = 0.0  #: Azurite / cosmosdb-server CPU per turn
    rss_mb: float = 0.0
    errors: int = 0
    conflicts: int = 0
    note: str = ""
    skipped: str = ""

    @property
    def tail(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms else 0.0


def summarise(label: str, key: str, tally: Tally, rss: int, note: str, skipped: str) -> Row:
    row = Row(label, key, note=note, skipped=skipped)
    if skipped or not tally.turns:
        row.skipped = skipped or f"not run: no turn was answered ({tally.first_error})"
        return row
    turns = tally.turns
    cuts = statistics.quantiles(tally.latencies, n=100, method="inclusive") if turns > 1 else [tally.latencies[0]] * 99
    row.turns = turns
    row.turns_per_s = turns / tally.seconds
    row.p50_ms = cuts[49] * 1000
    row.p99_ms = cuts[98] * 1000
    row.server_cpu_ms = tally.server_cpu / turns * 1000
    row.client_cpu_ms = tally.client_cpu / turns * 1000
    row.client_core_share = tally.client_cpu / tally.seconds
    row.store_cpu_ms = tally.store_cpu / turns * 1000
    row.rss_mb = rss / 2**20
    row.errors = tally.errors
    row.conflicts = tally.conflicts
    notes = [note] if note else []
    if row.store_cpu_ms:
        notes.append(f"store CPU {row.store_cpu_ms:.1f} ms/turn")
    busy = sorted((cpu for cpu in tally.process_cpu.values() if cpu > 0.02 * tally.server_cpu), reverse=True)
    if len(busy) > 1:
        notes.append("CPU split over processes " + "/".join(f"{cpu / tally.server_cpu:.0%}" for cpu in busy))
    if key.startswith("hot"):
        notes.append(f"busy/503: {tally.conflicts} ({tally.conflicts / turns:.1%})")
    if tally.errors:
        notes.append(f"{tally.errors} errors, first: {tally.first_error[:80]}")
    row.note = "; ".join(notes)
    return row


HEADERS = [
    "target", "turns/s", "p50 ms", "p99 ms", "p99/p50", "CPU ms/turn", "vs official", "vs Agents SDK", "RSS MB",
    "gen CPU ms/turn", "turns", "notes",
]  # fmt: skip


def _cells(row: Row, rows: list[Row]) -> list[str]:
    if row.skipped:
        return [row.label, *["-"] * (len(HEADERS) - 2), row.skipped]
    baselines = {r.key: r for r in rows if not r.skipped}

    def ratio(key: str) -> str:
        base = baselines.get(key)
        return f"{row.turns_per_s / base.turns_per_s:.2f}x" if base else "-"

    return [
        row.label,
        f"{row.turns_per_s:.0f}",
        f"{row.p50_ms:.2f}",
        f"{row.p99_ms:.2f}",
        f"{row.tail:.1f}",
        f"{row.server_cpu_ms:.2f}",
        ratio(OFFICIAL),
        ratio(AGENTS),
        f"{row.rss_mb:.0f}",
        f"{row.client_cpu_ms:.3f}",
        str(row.turns),
        row.note,
    ]


def growth_summary(rows: list[Row]) -> str:
    small = next((r for r in rows if r.key == "growth-small" and not r.skipped), None)
    large = next((r for r in rows if r.key == "growth-large" and not r.skipped), None)
    if small is None or large is None:
        return ""
    return (
        f"Growth ({small.label.split(', ')[-1]} -> {large.label.split(', ')[-1]}): "
        f"p50 {small.p50_ms:.2f} -> {large.p50_ms:.2f} ms ({large.p50_ms / small.p50_ms:.2f}x), "
        f"p99 {small.p99_ms:.2f} -> {large.p99_ms:.2f} ms ({large.p99_ms / small.p99_ms:.2f}x), "
        f"turns/s {small.turns_per_s:.0f} -> {large.turns_per_s:.0f} ({large.turns_per_s / small.turns_per_s:.2f}x), "
        f"RSS {small.rss_mb:.0f} -> {large.rss_mb:.0f} MB ({large.rss_mb / small.rss_mb:.2f}x)."
    )


def generator_summary(rows: list[Row]) -> str:
    measured = [r for r in rows if not r.skipped]
    if not measured:
        return ""
    busiest = max(measured, key=lambda r: r.client_core_share)
    return (
        f"Load generator: {min(r.client_cpu_ms for r in measured):.3f}-{max(r.client_cpu_ms for r in measured):.3f} "
        f"ms CPU per turn; at most {busiest.client_core_share:.0%} of one core (during '{busiest.label}')."
    )


def render_text(rows: list[Row], options: Options, facts: dict[str, str]) -> str:
    table = [HEADERS] + [_cells(row, rows) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS) - 1)]
    lines = []
    for number, line in enumerate(table):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line[:-1])]
        lines.append("  ".join([*cells, line[-1]]).rstrip())
        if number == 0:
            lines.append("-" * len(lines[0]))
    extra = [text for text in (growth_summary(rows), generator_summary(rows)) if text]
    head = (
        f"c={options.concurrency} expectReplies echo turns, {options.rounds} x {options.seconds:g} s per target, "
        f"{facts['cores']} cores ({facts['cpu']}), Python {facts['python']}, {facts['date']}"
        + (" [QUICK: smoke run, figures not meaningful]" if options.quick else "")
    )
    return "\n".join([head, "", *lines, "", *extra])


METHOD = """\
- Every target is a real server process on 127.0.0.1 (a free port), all started at the beginning and kept up; the
  load generator (`bench/loadgen.py`, raw HTTP/1.1 keep-alive over asyncio streams, one connection per virtual
  user, opened afresh for every slice and reopened every {reconnect} turns: with keep-alive connections held longer,
  one gunicorn worker accepts nearly all of them (measured 93%/7% of the CPU at 20 turns, ~50/50 at 5); the notes
  show how the server CPU split over the processes) runs in the `make bench` process.
- {c} virtual users each introduce themselves first (hello, then a name), so every measured turn is an ordinary
  message in `deliveryMode: expectReplies` answered with the echo in the HTTP response. A turn counts only if the
  answer is 200 and contains the message's text. Hot-conversation rows: the same users, all in ONE conversation.
- Targets are measured in {rounds} slices of {seconds:g} s each, after {warmup:g} s of warm-up; the order of
  targets rotates every round, so a change in the (shared) machine's load is spread over all of them. turns/s is
  measured turns over measured time; p50/p99 are over every measured turn's latency.
- CPU ms/turn: user+system CPU of the server's processes (gunicorn: master and workers) from /proc over the
  measured slices, divided by turns. "gen CPU ms/turn" is the same for the load generator (`time.process_time`).
  RSS: resident memory of the server's processes after the run (gunicorn: summed over master and workers).
- Baselines: `bench/official_sample.py` reproduces the official 45.state-management sample's behaviour (stock
  `ActivityHandler`, `UserState`/`ConversationState` on `MemoryStorage`, stock `CloudAdapter` with only the fix
  that makes expectReplies answer 200). `bench/agents_sample.py` is the same bot on the Microsoft 365 Agents SDK
  1.9.0 (`AgentApplication`, `MemoryStorage`, anonymous), run from `bench/.agents-venv`. Ratios are turns/s
  divided by the baseline's turns/s in this same run.
- This bot runs as `python app.py` (default settings, LOG_LEVEL=INFO) or as `make serve` does (gunicorn with
  gunicorn.conf.py, WEB_CONCURRENCY workers). Blob and table run on Azurite, cosmos on @vercel/cosmosdb-server
  (a Cosmos REST peer, not Cosmos DB) with a fresh certificate for 127.0.0.1 that the bot verifies through
  SSL_CERT_FILE: the bot is not modified for it.
- Growth rows: two `python app.py` processes on sqlite files that first get {small} and {large} stored users:
  copies, inserted with `executemany`, of the rows the bot wrote for a real user (user and conversation record).
- Hot conversation: "busy/503" counts turns answered 503 or with a "busy" reply (e_tag conflicts the bot gave up
  on); such turns are counted in turns/s but are not echoes.
- Delivery log rows: "no delivery log" is this bot with `REDELIVERY_MEMORY=0` (no exactly-once bookkeeping), so
  its difference from "this bot, sqlite" is what the bookkeeping costs, in the same run. "every 10th message
  delivered twice": each user sends every 10th message a second time with the same id, as a channel's retry; the
  note counts the copies sent and the turns the bot logged as `redelivered` (each copy must be one).
- Telemetry rows: the same bot with a `hosting.Telemetry` on OpenTelemetry SDK providers (bench/telemetry_bot.py):
  the SDK's BatchSpanProcessor into an in-memory exporter drained every second, metrics into an in-memory reader;
  every trace sampled (the worst case), or 5 traces/s by the Azure Monitor distro's own default sampler
  (`RateLimitedSampler`). "this bot, sqlite" is the same bot with telemetry off, in the same run."""


def render_markdown(rows: list[Row], options: Options, facts: dict[str, str]) -> str:
    table = [HEADERS] + [_cells(row, rows) for row in rows]
    lines = ["| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in table]
    lines.insert(1, "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 2) + ["---"]) + "|")
    extra = [text for text in (growth_summary(rows), generator_summary(rows)) if text]
    method = METHOD.format(
        c=options.concurrency,
        rounds=options.rounds,
        seconds=options.seconds,
        warmup=options.warmup,
        reconnect=options.reconnect_every,
        small=f"{options.growth[0]:,}",
        large=f"{options.growth[1]:,}",
    )
    return "\n".join(
        [
            "# Benchmark results",
            "",
            "Written by `make bench` (`python -m bench`); only figures from one run are comparable with each other.",
            "",
            f"- Date: {facts['date']}; commit {facts['commit']}"
            + (" (QUICK smoke run: figures not meaningful)" if options.quick else ""),
            f"- Machine: {facts['cores']} cores, {facts['cpu']}, {facts['os']}; Python {facts['python']}; "
            f"load average {facts['load']} (the machine is shared: other programs ran too)",
            "",
            *lines,
            "",
            *[f"{text}\n" for text in extra],
            "## Method",
            "",
            method,
            "",
        ]
    )
