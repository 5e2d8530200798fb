"""Skyloom's driver: a local stack (moto in server mode, the three functions, N worker agents of one
slot each) started here, driven through the SDK as a user would.

Run by ``benchmarks/side_by_side.py`` with the project's Python; see :mod:`benchmarks.peers.common`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import skyloom
from benchmarks.peers import common, skyloom_tasks
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack

#: What each agent writes to its log once it starts (fargate_worker/agent.py).
AGENT_STARTED = b"agent starting"


class SkyloomSystem:
    """One session for the whole run, as a user's job has: opening one is not part of any task's
    latency (Celery's driver, likewise, connects its app once)."""

    def __init__(self, stack: LocalStack, client: skyloom.Client) -> None:
        self._stack = stack
        self._client = client
        self._session = client.session(name="side-by-side")

    def wait_ready(self, workers: int, timeout: float) -> None:
        logs = [self._stack.workers.log_path(i) for i in range(workers)]
        for _ in common.deadline_iter(min(timeout, 120.0)):
            if all(p.exists() and AGENT_STARTED in p.read_bytes() for p in logs):
                return
        raise TimeoutError(f"the {workers} worker agents did not start; see {self._stack.run_dir}")

    def run_batch(self, n: int, seconds: float, timeout: float) -> Sequence[Any]:
        with self._session as session:
            futures = [skyloom_tasks.work.submit(seconds) for _ in range(n)]
            session.wait(futures, timeout=timeout)
            return [f.result(timeout=timeout) for f in futures]

    def tree_sum(self, lo: int, hi: int, leaf: int, timeout: float) -> int:
        with self._session:
            value: int = skyloom_tasks.tree_sum.submit(lo, hi, leaf).result(timeout=timeout)
            return value


@contextmanager
def start(args: argparse.Namespace) -> Iterator[SkyloomSystem]:
    run_dir = Path(args.run_dir) / "stack" if args.run_dir else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    env = {"SKYLOOM_WORKER_SLOTS": "1"}
    with LocalStack(workers=args.workers, worker_env=env, run_dir=run_dir) as stack:
        client = skyloom.connect(stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
        try:
            yield SkyloomSystem(stack, client)
        finally:
            client.close()


if __name__ == "__main__":
    sys.exit(common.main(start))
