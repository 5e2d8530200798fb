"""``python -m skyloom_server.fargate_worker``: run one worker agent until it is told to stop.

Flags override the environment (``SKYLOOM_WORKER_*``, see :mod:`fargate_worker.settings`). Exit
codes: 0 after an orderly or signalled stop, 1 if the agent is broken, 2 if misconfigured.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from skyloom.core import environment, models
from skyloom.core.aws import client
from skyloom.runtime import lifeline
from skyloom_server.fargate_worker import machine
from skyloom_server.fargate_worker.agent import Agent
from skyloom_server.fargate_worker.settings import WorkerConfigError, load
from skyloom_server.fargate_worker.telemetry import logger


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m skyloom_server.fargate_worker", description="Run a Skyloom worker agent."
    )
    p.add_argument("--partition", help="partition whose queues to drain (SKYLOOM_WORKER_PARTITION)")
    p.add_argument("--slots", type=int, help="tasks run at once (SKYLOOM_WORKER_SLOTS)")
    p.add_argument("--burst", action="store_true", default=None,
                   help="exit once the queues are empty (SKYLOOM_WORKER_BURST)")
    p.add_argument("--max-tasks", type=int, help="exit after this many tasks (SKYLOOM_WORKER_MAX_TASKS)")
    return p.parse_args(argv)


def record_environment(partition: str) -> None:
    """Publish this worker's Python and cloudpickle for clients to check before they ship functions
    (``GET /environment``). A failure is logged, not fatal: the worker can still run tasks."""
    try:
        environment.record(partition, environment.local_versions())
    except Exception:
        logger.exception("could not record the worker's Python and cloudpickle versions")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings, config = load()
        config = config.with_overrides(
            partition=args.partition, slots=args.slots, burst=args.burst, max_tasks=args.max_tasks
        )
    except WorkerConfigError as exc:
        logger.error(f"invalid configuration: {exc}")
        return 2
    # Where this worker runs, learnt once: every attempt record it writes carries it.
    settings = dataclasses.replace(settings, machine=machine.describe(
        capacity_provider=machine.ecs_capacity_provider(lambda: client("ecs", settings))))
    logger.info("machine", extra={"machine": settings.machine.model_dump() if settings.machine else None})
    models.bind(settings)
    record_environment(config.partition)
    agent = Agent(settings, config)
    # Local mode: drain and exit like on SIGTERM if the stack that started this agent is gone.
    lifeline.watch_parent_from_env(lambda: agent.request_stop("the local stack that started this agent is gone"))
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
