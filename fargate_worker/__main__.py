"""``python -m skyloom_server.fargate_worker``: run one worker agent until it is told to stop.

Flags override the environment (``SKYLOOM_WORKER_*``, see :mod:`fargate_worker.settings`). Exit
codes: 0 after an orderly or signalled stop, 1 if the agent is broken, 2 if misconfigured.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
from collections.abc import Sequence

from skyloom.core import environment, heap, models
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
    # Local mode: drain and exit like on SIGTERM if the stack that started this agent is gone.
    # Watched from the start: the calls before the agent runs retry for long against a dead emulator.
    made: list[Agent] = []
    lifeline.watch_parent_from_env(lambda: _orphaned(made))
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
    made.append(agent)
    heap.settle()  # everything the agent keeps is built by now
    return agent.run()


#: Seconds an agent whose local stack is gone drains before it exits regardless. Its emulator is
#: usually gone with the stack: every call then retries for half a minute against a closed port, and
#: what it would write has nowhere to go. What it still holds comes back after its visibility
#: timeout (an emulator that lives on: LocalStack), exactly as after a SIGKILL, which loses nothing.
ORPHANED_EXIT_SECONDS = 5.0


def _orphaned(made: list[Agent]) -> None:
    """Stop the agent (``made``: it, once made), then exit after :data:`ORPHANED_EXIT_SECONDS`."""
    for agent in made:
        agent.request_stop("the local stack that started this agent is gone")

    def exit_now() -> None:
        logger.warning(f"still running {ORPHANED_EXIT_SECONDS:.0f} s after its stack was gone: exiting now")
        sys.stdout.flush()
        os._exit(0)

    timer = threading.Timer(ORPHANED_EXIT_SECONDS, exit_now)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
