"""The benchmark harness end to end, as a smoke run: real server processes, a few turns, no timing asserted.

``python -m bench --quick`` against the bare echo server and this bot on sqlite (``python app.py``), also with every
10th message delivered twice and with telemetry on (bench/telemetry_bot.py); the test checks only that the rows were
measured (turns answered, no errors), that every copy was answered as a redelivery, and that the table and the
markdown report carry them. The figures of such a short run mean nothing and are not looked at.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT

ROWS = (
    "bare aiohttp echo (ceiling)",
    "this bot, sqlite",
    "this bot, sqlite, every 10th message delivered twice",
    "this bot, sqlite, telemetry on (every span, in-memory exporter)",
)


def test_a_quick_bench_run_prints_and_writes_a_row_per_target(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--seconds", "0.3", "--targets", "echo", "sqlite",
         "sqlite-copies", "sqlite-telemetry", "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    header = next(line for line in lines if line.startswith("target"))
    assert header.split()[:4] == ["target", "turns/s", "p50", "ms"]
    for label in ROWS:
        row = next(line for line in lines if line.startswith(label))
        cells = row[len(label) :].split()
        assert int(cells[0]) > 0, row  # turns/s: turns were answered
        assert "errors" not in row, row
        assert "not run" not in row, row
    assert "Result(" not in run.stdout
    report = results.read_text()
    assert "| target | turns/s |" in report
    for label in ROWS:
        assert f"| {label} |" in report
    copies = re.search(r"copies sent: (\d+), answered as redelivered: (\d+) of", report)
    assert copies is not None, report
    assert int(copies.group(1)) > 0
    assert copies.group(1) == copies.group(2), "every copy was answered as a redelivery (none applied twice)"
    assert "Machine:" in report
    assert "## Method" in report
