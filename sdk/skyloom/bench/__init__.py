"""``skyloom bench``: measure a stack's throughput, latency, worker utilisation and AWS API cost.

:func:`run` takes a :class:`BenchConfig` and returns a JSON-ready report; the CLI in
:mod:`skyloom.cli.bench` only parses options. The task functions live in
:mod:`skyloom.bench.tasks` so that workers import them by name (the SDK is installed on workers).
"""

from __future__ import annotations

from skyloom.bench.runner import BenchConfig, run

__all__ = ["BenchConfig", "run"]
