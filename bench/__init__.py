"""Benchmarks. Run with ``make bench`` (or ``python -m bench --help``); results go to bench/results/."""
