"""Full-turn throughput, latency and CPU of this bot next to its baselines, every target in the same run.

    make bench             # or: python -m bench            (a few minutes; writes bench/RESULTS.md)
    make bench QUICK=1     # or: python -m bench --quick    (a smoke run: seconds per target, same table)

Every target is a real server process on 127.0.0.1 and a free port, started once and kept up for the whole run:
the official "state management" sample's behaviour on stock botbuilder (bench/official_sample.py), a minimal
port of it to the Microsoft 365 Agents SDK in its own virtual environment (bench/agents_sample.py), a bare
aiohttp echo (the ceiling), and this bot (``python app.py``, or gunicorn as ``make serve`` runs it) on each
storage backend. ``--concurrency`` virtual users (default 8), each in its own conversation (or all in one, for
the hot-conversation rows), first introduce themselves (so every measured turn is an ordinary echo) and then
send ``expectReplies`` messages back to back. Targets are measured in ``--rounds`` short slices, the order
rotating every round, so a change in the machine's load (it is shared) spreads over all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.growth import populate
from bench.loadgen import RECONNECT_EVERY, Tally, VirtualUser, measure, rss_bytes
from bench.report import Options, Row, render_markdown, render_text, summarise
from bench.servers import Server, bench_server, bot_server, gunicorn_server
from hosting.logs import short_id
from tests.support.processes import ROOT

logger = logging.getLogger("bench")

BENCH = Path(__file__).resolve().parent
RESULTS_MD = BENCH / "RESULTS.md"
AGENTS_VENV = BENCH / ".agents-venv"
AGENTS_REQUIREMENTS = BENCH / "agents-requirements.txt"


@dataclass(frozen=True)
class TargetSpec:
    key: str
    label: str
    server: str  #: key of the server process (two targets may share one)
    hot: bool = False  #: every user in one conversation
    stored_users: int = 0  #: growth run: users added to the sqlite file before measuring
    redeliver_every: int = 0  #: every n-th message is delivered twice (same id), as a channel's retry


TARGETS = [
    TargetSpec("official", "official sample (botbuilder 4.17.1, MemoryStorage)", "official"),
    TargetSpec("agents", "Agents SDK 1.9.0 port (MemoryStorage)", "agents"),
    TargetSpec("echo", "bare aiohttp echo (ceiling)", "echo"),
    TargetSpec("memory", "this bot, memory", "memory"),
    TargetSpec("sqlite", "this bot, sqlite", "sqlite"),
    TargetSpec("sqlite-nolog", "this bot, sqlite, no delivery log (REDELIVERY_MEMORY=0)", "sqlite-nolog"),
    TargetSpec(
        "sqlite-telemetry", "this bot, sqlite, telemetry on (every span, in-memory exporter)", "sqlite-telemetry"
    ),
    TargetSpec(
        "sqlite-sampled",
        "this bot, sqlite, telemetry on (5 traces/s as the distro samples, in-memory exporter)",
        "sqlite-sampled",
    ),
    TargetSpec(
        "sqlite-copies", "this bot, sqlite, every 10th message delivered twice", "sqlite-copies", redeliver_every=10
    ),
    TargetSpec("blob", "this bot, blob (Azurite)", "blob"),
    TargetSpec("table", "this bot, table (Azurite)", "table"),
    TargetSpec("cosmos", "this bot, cosmos (cosmosdb-server)", "cosmos"),
    TargetSpec("sqlite-w1", "this bot, sqlite, gunicorn 1 worker", "gunicorn-1"),
    TargetSpec("sqlite-w2", "this bot, sqlite, gunicorn 2 workers", "gunicorn-2"),
    TargetSpec("sqlite-w4", "this bot, sqlite, gunicorn 4 workers", "gunicorn-4"),
    TargetSpec("hot-w1", "hot conversation, sqlite, 1 worker", "gunicorn-1", hot=True),
    TargetSpec("hot-w2", "hot conversation, sqlite, 2 workers", "gunicorn-2", hot=True),
    TargetSpec("hot-w4", "hot conversation, sqlite, 4 workers", "gunicorn-4", hot=True),
    TargetSpec("growth-small", "growth: sqlite, {n} stored users", "growth-small", stored_users=1_000),
    TargetSpec("growth-large", "growth: sqlite, {n} stored users", "growth-large", stored_users=1_000_000),
]
TARGET_KEYS = [spec.key for spec in TARGETS]


@dataclass
class Target:
    spec: TargetSpec
    label: str
    server: Server | None = None
    store_pids: list[int] = field(default_factory=list)
    users: list[VirtualUser] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    note: str = ""
    skipped: str = ""


class Services:
    """Azurite and cosmosdb-server, started only when a chosen target needs them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.azurite: object | None = None
        self.cosmos: object | None = None
        self.cosmos_cert: Path | None = None

    def azurite_settings(self) -> tuple[dict[str, str], list[int]]:
        from tests.support.azurite import Azurite, missing_node_reason

        if self.azurite is None:
            reason = missing_node_reason()
            if reason:
                raise RuntimeError(reason)
            server = Azurite(self.workdir)
            server.start()
            self.azurite = server
        assert isinstance(self.azurite, Azurite)
        pid = self.azurite._process.pid if self.azurite._process else 0
        return {"AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string}, [pid]

    def cosmos_settings(self) -> tuple[dict[str, str], list[int]]:
        from tests.support.cosmos_server import SERVER_PACKAGE, CosmosServer, start_cosmos_server

        if self.cosmos is None:
            if shutil.which("node") is None:
                raise RuntimeError("node is not installed")
            if not (SERVER_PACKAGE / "lib" / "cli.js").is_file():
                raise RuntimeError(f"{SERVER_PACKAGE} is missing (npm ci --ignore-scripts)")
            cert, key = self.workdir / "cosmos-cert.pem", self.workdir / "cosmos-key.pem"
            # A certificate for 127.0.0.1 that the bot verifies as usual (SSL_CERT_FILE), instead of the server's
            # bundled one (expired, made for another name), which would need verification turned off in the bot.
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            self.cosmos = start_cosmos_server(self.workdir / "cosmos", tls=(cert, key))
            self.cosmos_cert = cert
        assert isinstance(self.cosmos, CosmosServer)
        settings = {
            "COSMOS_ENDPOINT": self.cosmos.endpoint,
            "COSMOS_KEY": self.cosmos.key,
            "SSL_CERT_FILE": str(self.cosmos_cert),
        }
        return settings, [self.cosmos.process.pid]

    def stop(self) -> None:
        for service in (self.azurite, self.cosmos):
            if service is not None:
                service.stop()  # type: ignore[attr-defined]


def ensure_agents_venv() -> str:
    """The Agents SDK's own virtual environment (bench/.agents-venv), made or updated when its pins change."""
    python = AGENTS_VENV / "bin" / "python"
    wanted = hashlib.sha256(AGENTS_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = AGENTS_VENV / ".installed"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    logger.info("creating %s (microsoft-agents-* 1.9.0, about a minute, once)", AGENTS_VENV.relative_to(ROOT))
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(AGENTS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(AGENTS_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)
    return str(python)


def make_server(key: str, workdir: Path, services: Services) -> tuple[Server, list[int]]:
    """The server process named ``key`` (not started yet) and the pids of the store it talks to, if any."""
    sqlite = {"STORAGE": "sqlite", "SQLITE_PATH": str(workdir / f"{key}.sqlite3")}
    if key == "echo":
        return bench_server("echo", "bench.echo_server", workdir), []
    if key == "official":
        return bench_server("official", "bench.official_sample", workdir), []
    if key == "agents":
        return bench_server("agents", "bench.agents_sample", workdir, python=ensure_agents_venv()), []
    if key == "memory":
        return bot_server(key, workdir, STORAGE="memory"), []
    if key in ("sqlite", "sqlite-copies", "growth-small", "growth-large"):
        return bot_server(key, workdir, **sqlite), []
    if key == "sqlite-nolog":
        return bot_server(key, workdir, **sqlite, REDELIVERY_MEMORY="0"), []
    if key == "sqlite-telemetry":
        return bot_server(key, workdir, module="bench.telemetry_bot", **sqlite), []
    if key == "sqlite-sampled":
        return bot_server(key, workdir, module="bench.telemetry_bot", **sqlite, BENCH_TRACES_PER_SECOND="5"), []
    if key in ("blob", "table"):
        settings, pids = services.azurite_settings()
        return bot_server(key, workdir, STORAGE=key, **settings), pids
    if key == "cosmos":
        settings, pids = services.cosmos_settings()
        return bot_server(key, workdir, STORAGE="cosmos", **settings), pids
    if key.startswith("gunicorn-"):
        return gunicorn_server(key, workdir, int(key.split("-")[1]), **sqlite), []
    raise ValueError(key)


def _short(number: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if number >= size and number % size == 0:
            return f"{number // size}{suffix}"
    return str(number)


async def introduce(target: Target, concurrency: int, reconnect_every: int) -> None:
    """Create the virtual users and let each one give its name in a conversation of its own."""
    assert target.server is not None
    slug = target.spec.key
    for number in range(concurrency):
        user = VirtualUser(
            target.server.url,
            f"{slug}-user-{number:03d}",
            f"{slug}-conversation-{number:03d}",
            reconnect_every,
            target.spec.redeliver_every,
        )
        await user.post("hello")
        status, body = await user.post(f"Ada {chr(ord('A') + number % 26)}")
        if status != 200:
            raise RuntimeError(f"introducing {user.user_id} failed: HTTP {status} {body[:300]!r}")
        if target.spec.hot:
            user.conversation_id = f"{slug}-hot-conversation"
        target.users.append(user)


async def start_servers(targets: list[Target], servers: dict[str, Server]) -> None:
    """Start every server the targets need, side by side; a target whose server fails is skipped."""
    wanted = {target.spec.server: servers[target.spec.server] for target in targets if target.server is not None}
    outcomes = await asyncio.gather(*(server.start() for server in wanted.values()), return_exceptions=True)
    failed = {key: outcome for key, outcome in zip(wanted, outcomes, strict=True) if isinstance(outcome, Exception)}
    for key, error in failed.items():
        if isinstance(error, Exception):
            logger.warning("%s did not start: %s", key, error)
    for target in targets:
        if target.spec.server in failed:
            target.skipped = f"not run: the server did not start ({str(failed[target.spec.server]).splitlines()[0]})"
    await asyncio.sleep(1.0)  # gunicorn starts its workers after the master answers
    for server in wanted.values():
        server.refresh_pids()


async def prepare(target: Target, options: Options) -> None:
    await introduce(target, options.concurrency, options.reconnect_every)
    if target.spec.stored_users:
        assert target.server is not None
        path = Path(target.server.env["SQLITE_PATH"])
        # Another process (this one) writes to the bot's live file, as a second worker would.
        first = target.users[0]
        await asyncio.to_thread(populate, path, first.user_id, first.conversation_id, target.spec.stored_users)
        size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
        target.note = f"file {size / 2**20:.0f} MB"
    assert target.server is not None
    await measure(target.users, options.warmup, Tally(), target.server.pids)  # warm-up, thrown away


async def run(options: Options, keys: list[str]) -> list[Row]:
    specs = {spec.key: spec for spec in TARGETS}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        services = Services(workdir)
        servers: dict[str, Server] = {}
        targets: list[Target] = []
        try:
            for key in keys:
                spec = specs[key]
                if spec.stored_users:
                    count = options.growth[0] if key == "growth-small" else options.growth[1]
                    spec = TargetSpec(spec.key, spec.label, spec.server, spec.hot, count, spec.redeliver_every)
                target = Target(spec, spec.label.format(n=_short(spec.stored_users)))
                targets.append(target)
                try:
                    if spec.server not in servers:
                        servers[spec.server], pids = make_server(spec.server, workdir, services)
                        target.store_pids = pids
                    else:
                        target.store_pids = next(t.store_pids for t in targets if t.spec.server == spec.server)
                    target.server = servers[spec.server]
                except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
                    target.skipped = f"not run: {str(err).splitlines()[0]}"
                    logger.warning("%s: %s", key, target.skipped)
            logger.info("starting %d servers", len(servers))
            await start_servers(targets, servers)
            live = [target for target in targets if not target.skipped]
            for target in live:
                logger.info("preparing %s", target.label)
                try:
                    await prepare(target, options)
                except (RuntimeError, OSError) as err:
                    target.skipped = f"not run: {err}"
                    logger.warning("%s: %s", target.spec.key, err)
            live = [target for target in live if not target.skipped]
            for number in range(options.rounds):
                logger.info("round %d of %d", number + 1, options.rounds)
                shift = number % max(len(live), 1)
                for target in live[shift:] + live[:shift]:
                    assert target.server is not None
                    target.server.refresh_pids()
                    await measure(target.users, options.seconds, target.tally, target.server.pids, target.store_pids)
            for target in live:
                if target.spec.hot:
                    target.note = "; ".join(filter(None, [target.note, retry_note(target)]))
                if target.spec.redeliver_every:
                    target.note = "; ".join(filter(None, [target.note, redelivery_note(target)]))
            rows = [summarise(t.label, t.spec.key, t.tally, _rss(t), t.note, t.skipped) for t in targets]
        finally:
            for target in targets:
                for user in target.users:
                    await user.close()
            await asyncio.gather(*(server.stop() for server in servers.values()))
            services.stop()
    return rows


TURN_LINE = re.compile(r"turn \S+?@\S+?/(\S+): (\w+), [^,]*, (\d+) attempts?")


def retry_note(target: Target) -> str:
    """How often the hot conversation's turns were tried again (e_tag conflicts), read from the bot's turn log."""
    assert target.server is not None
    conversation = short_id(target.users[0].conversation_id)
    attempts = [
        int(match.group(3))
        for match in TURN_LINE.finditer(target.server.log_path.read_text(errors="replace"))
        if match.group(1) == conversation
    ]
    if not attempts:
        return ""
    retried = sum(1 for count in attempts if count > 1)
    return f"retried: {retried / len(attempts):.1%} of turns, {sum(attempts) - len(attempts)} extra attempts"


def redelivery_note(target: Target) -> str:
    """How many copies the users sent and how many the bot answered as redeliveries (its turn log says
    ``redelivered``), over the whole run (warm-up included)."""
    assert target.server is not None
    outcomes = [match.group(2) for match in TURN_LINE.finditer(target.server.log_path.read_text(errors="replace"))]
    copies = sum(user.copies for user in target.users)
    return f"copies sent: {copies}, answered as redelivered: {outcomes.count('redelivered')} of {len(outcomes)} turns"


def _rss(target: Target) -> int:
    return rss_bytes(target.server.pids) if target.server is not None and not target.skipped else 0


def machine(load_before: str) -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import platform

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": f"{load_before} before, {' '.join(f'{v:.2f}' for v in os.getloadavg())} after",
    }


def parse_args(argv: list[str] | None = None) -> tuple[Options, list[str], Path, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one short round, small growth files")
    parser.add_argument("--targets", nargs="+", choices=TARGET_KEYS, default=TARGET_KEYS, metavar="TARGET",
                        help=f"which rows to run (default all: {' '.join(TARGET_KEYS)})")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=8, help="virtual users sending at once (default 8)")
    parser.add_argument("--rounds", type=int, help="measured slices per target (default 6; quick: 1)")
    parser.add_argument("--seconds", type=float, help="length of one slice in seconds (default 2; quick: 0.5)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured turns per target (default 1.5)")
    parser.add_argument("--growth", type=int, nargs=2, metavar=("SMALL", "LARGE"),
                        help="stored users of the growth rows (default 1000 1000000; quick: 1000 20000)")  # fmt: skip
    parser.add_argument("--reconnect-every", type=int, default=RECONNECT_EVERY, metavar="TURNS",
                        help=f"open a new connection after this many turns (default {RECONNECT_EVERY})")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS_MD, help="markdown report (default bench/RESULTS.md)")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    args = parser.parse_args(argv)
    options = Options(
        concurrency=args.concurrency,
        rounds=args.rounds or (1 if args.quick else 6),
        seconds=args.seconds or (0.5 if args.quick else 2.0),
        warmup=args.warmup or (0.3 if args.quick else 1.5),
        growth=tuple(args.growth or ((1_000, 20_000) if args.quick else (1_000, 1_000_000))),
        quick=args.quick,
        reconnect_every=args.reconnect_every,
    )
    keys = [key for key in TARGET_KEYS if key in args.targets]
    return options, keys, args.results, args.json


def main(argv: list[str] | None = None, write: Callable[[str], object] = sys.stdout.write) -> list[Row]:
    """Run the benchmark, write the table to ``write`` and the markdown report to ``--results``."""
    options, keys, results_path, json_path = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())
    rows = asyncio.run(run(options, keys))
    facts = machine(load_before)
    write(render_text(rows, options, facts) + "\n")
    results_path.write_text(render_markdown(rows, options, facts))
    if json_path is not None:
        raw = {"machine": facts, "options": vars(options), "rows": [vars(row) for row in rows]}
        json_path.write_text(json.dumps(raw, indent=2, default=str))
    return rows


if __name__ == "__main__":
    main()
