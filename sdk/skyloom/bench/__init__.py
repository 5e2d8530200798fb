"""``skyloom bench``: measure a stack's throughput, latency, worker utilisation and AWS API cost.

:func:`run` takes a :class:`BenchConfig` and returns a JSON-ready report (:func:`run_preemption`
takes a :class:`PreemptionConfig`: long checkpointing tasks while workers are reclaimed); the CLI in
:mod:`skyloom.cli.bench` only parses options. The task functions live in
:mod:`skyloom.bench.tasks` so that workers import them by name (the SDK is installed on workers).
"""

from __future__ import annotations

from skyloom.bench.preemption import PreemptionConfig, run_preemption
from skyloom.bench.runner import BenchConfig, run

__all__ = ["BenchConfig", "PreemptionConfig", "run", "run_preemption"]
