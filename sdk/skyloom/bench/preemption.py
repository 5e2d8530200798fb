"""The preemption benchmark: throughput of long tasks while workers are reclaimed, with and without
checkpoints, in the spirit of ArmoniK's curves.

On Spot, a worker is reclaimed with a notice (SIGTERM, then a grace period, then SIGKILL) and
replaced. A task that does not checkpoint starts over on its next attempt; one that checkpoints
every step (and once more on the notice, ``skyloom.on_preempt``) goes on from its last step. The
benchmark runs the same graph twice on one local stack, once each way, while a reclaimer thread
reclaims a share of the workers every few seconds (SIGTERM, SIGKILL after the grace period, a fresh
agent in its place), and reports both runs side by side.

Definitions:

- tasks/s: tasks / (every result final - first submission);
- steps run: steps the task bodies executed in all attempts, against the ``tasks x steps`` the graph
  needs: the excess is work lost to reclaims;
- resumes: attempts that started from a checkpoint rather than from scratch;
- reclaims: workers reclaimed during the run.

Local stacks only: the reclaimer signals the agent processes it started.
"""

from __future__ import annotations

import math
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import skyloom
from skyloom.bench import tasks
from skyloom.core.config import Settings

#: A short lease and sweep, so that a SIGKILLed worker's task is taken back in seconds, as in the
#: worker fault tests; production leases are a minute.
BENCH_SETTINGS = Settings(lease_seconds=3, redispatch_after_seconds=3, finalize_after_seconds=2, visibility_timeout=30)


@dataclass(frozen=True)
class PreemptionConfig:
    """What to run. Defaults: 8 tasks of 10 steps of 0.5 s on 4 single-slot workers; every 3 s half
    of them are reclaimed with a 1 s grace period, 4 times per run."""

    tasks: int = 8
    steps: int = 10
    step_seconds: float = 0.5
    workers: int = 4
    #: Share of the workers reclaimed at each round (at least one worker).
    share: float = 0.5
    #: Seconds between two rounds of reclaims.
    every: float = 3.0
    #: Rounds per run; then the workers are left alone, so that the run ends.
    rounds: int = 4
    #: The workers' grace period after SIGTERM (``SKYLOOM_WORKER_GRACE_SECONDS``).
    grace_seconds: float = 1.0
    seed: int = 16
    timeout: float = 1800.0

    def __post_init__(self) -> None:
        if self.tasks < 1 or self.steps < 1 or self.workers < 1 or self.rounds < 0:
            raise ValueError("tasks, steps and workers must be >= 1, rounds >= 0")
        if not 0 < self.share <= 1:
            raise ValueError(f"share must be in (0, 1], got {self.share}")
        if self.step_seconds < 0 or self.every <= 0 or self.grace_seconds < 0:
            raise ValueError("step_seconds and grace_seconds must be >= 0, every > 0")


def run_preemption(config: PreemptionConfig) -> dict[str, Any]:
    """Run the graph with checkpoints, then without, on one local stack; return the report."""
    from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack

    env = {"SKYLOOM_WORKER_SLOTS": "1", "SKYLOOM_WORKER_PREFETCH": "0",
           "SKYLOOM_WORKER_GRACE_SECONDS": str(config.grace_seconds)}
    with LocalStack(workers=config.workers, settings=BENCH_SETTINGS, sweep_interval=1.0, worker_env=env) as stack:
        client = skyloom.connect(stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
        try:
            _warm_up(client, config)
            runs = {name: _run(client, stack, config, checkpoints=name == "with_checkpoints")
                    for name in ("with_checkpoints", "without_checkpoints")}
        finally:
            client.close()
    return {"config": asdict(config), "runs": runs}


def _warm_up(client: skyloom.Client, config: PreemptionConfig) -> None:
    """Short tasks on every worker first, so that neither run pays for the agents' first start."""
    with client.session(name="bench-preemption-warm-up"):
        skyloom.gather([tasks.work.submit(b"", 0, "sleep", 0.2) for _ in range(2 * config.workers)],
                       timeout=config.timeout)


def _run(client: skyloom.Client, stack: Any, config: PreemptionConfig, *, checkpoints: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="skyloom-bench-steps-") as ledger:
        start = time.monotonic()
        with client.session(name=f"bench-preemption-{'ckpt' if checkpoints else 'plain'}") as session:
            step = tasks.steps.options(max_retries=100)  # a SIGKILLed attempt counts: reclaims are not the task's
            futures = [step.submit(config.steps, config.step_seconds, checkpoints, str(Path(ledger, str(i))))
                       for i in range(config.tasks)]
            session.flush()
            with _reclaiming(stack, config) as reclaims:
                skyloom.gather(futures, timeout=config.timeout)
            done = time.monotonic()
            infos = [client.task_checkpoints(session.session_id, f.task_id) for f in futures if f.task_id]
        steps_run = sum(len(p.read_bytes()) for p in Path(ledger).iterdir())
    needed = config.tasks * config.steps
    return {
        "tasks": config.tasks,
        "end_to_end_seconds": round(done - start, 3),
        "tasks_per_s": round(config.tasks / max(done - start, 1e-9), 3),
        "steps_needed": needed,
        "steps_run": steps_run,
        "steps_lost": steps_run - needed,
        "reclaims": len(reclaims),
        "resumes": sum(len(i.resumes) for i in infos),
        "checkpoints_taken": sum(i.taken for i in infos),
    }


@contextmanager
def _reclaiming(stack: Any, config: PreemptionConfig) -> Iterator[list[int]]:
    """Reclaim ``share`` of the workers every ``every`` seconds, ``rounds`` times, while the body
    runs; yields the list of reclaimed worker indexes (filled as it goes)."""
    reclaimed: list[int] = []
    stop = threading.Event()
    rng = random.Random(config.seed)

    def reclaim(index: int) -> None:
        # SIGTERM, SIGKILL if still running after the grace period (and a margin), a fresh agent.
        stack.workers.restart(index, graceful=True, timeout=config.grace_seconds + 2.0)

    def loop() -> None:
        count = max(1, math.ceil(config.share * config.workers))
        for _ in range(config.rounds):
            if stop.wait(config.every):
                return
            chosen = rng.sample(range(config.workers), count)
            threads = [threading.Thread(target=reclaim, args=(i,), daemon=True) for i in chosen]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            reclaimed.extend(chosen)

    thread = threading.Thread(target=loop, name="reclaimer", daemon=True)
    thread.start()
    try:
        yield reclaimed
    finally:
        stop.set()
        thread.join()


def summary(report: dict[str, Any]) -> str:
    """Both runs side by side, in a few lines."""
    c = report["config"]
    lines = [f"{c['tasks']} tasks x {c['steps']} steps of {c['step_seconds']} s on {c['workers']} workers; "
             f"{c['share']:.0%} of them reclaimed every {c['every']} s ({c['rounds']} rounds, "
             f"{c['grace_seconds']} s grace)"]
    for name, r in report["runs"].items():
        lines.append(f"{name.replace('_', ' ')}: {r['tasks_per_s']} tasks/s ({r['end_to_end_seconds']} s), "
                     f"steps run {r['steps_run']} of {r['steps_needed']} needed, {r['reclaims']} reclaims, "
                     f"{r['resumes']} resumes")
    return "\n".join(lines)
