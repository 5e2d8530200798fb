"""Worker agent processes, supervised like the tasks of a Fargate service.

Each worker is ``python -m skyloom_server.fargate_worker`` in its own process group (its "container"), with the
settings of the stack in its environment and its output in ``worker-N.log``. Chaos tests use
:meth:`WorkerPool.kill` (SIGKILL: a Spot reclaim without notice, or a crash) and
:meth:`WorkerPool.terminate` (SIGTERM: the two-minute Spot interruption notice); signals go to the
whole group, as stopping a container ends every process in it, user-code children included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

#: What a worker runs unless told otherwise.
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "skyloom_server.fargate_worker")
#: Environment variable carrying the worker's id (index and generation), for its logs.
WORKER_ID_ENV = "SKYLOOM_WORKER_ID"


@dataclass
class _Worker:
    index: int
    generation: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]


class WorkerPool:
    """N worker agent subprocesses.

    Args:
        count: Number of workers.
        env: Their whole environment (settings, credentials, PATH...).
        run_dir: Where ``worker-N.log`` files go.
        command: The program to run, ``python -m skyloom_server.fargate_worker`` by default.
    """

    def __init__(
        self, count: int, *, env: Mapping[str, str], run_dir: Path, command: Sequence[str] | None = None
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self._count = count
        self._env = dict(env)
        self._run_dir = run_dir
        self._command = list(command) if command is not None else list(DEFAULT_COMMAND)
        self._workers: dict[int, _Worker] = {}

    def __len__(self) -> int:
        return self._count

    @property
    def pids(self) -> list[int | None]:
        """PID of each worker (None if it is not running)."""
        return [self.pid(i) for i in range(self._count)]

    def pid(self, index: int) -> int | None:
        worker = self._workers.get(index)
        if worker is None or worker.process.poll() is not None:
            return None
        return worker.process.pid

    def alive(self, index: int) -> bool:
        return self.pid(index) is not None

    def returncode(self, index: int) -> int | None:
        """Exit status of the worker's current process, None while it runs."""
        worker = self._workers.get(index)
        return None if worker is None else worker.process.poll()

    def log_path(self, index: int) -> Path:
        return self._run_dir / f"worker-{index}.log"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every worker that is not running."""
        self._run_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self._count):
            if not self.alive(index):
                self._spawn(index)

    def kill(self, index: int) -> None:
        """SIGKILL the worker's process group: it gets no chance to clean up."""
        self._signal(index, signal.SIGKILL)

    def terminate(self, index: int) -> None:
        """SIGTERM the worker's process group: it should drain and exit."""
        self._signal(index, signal.SIGTERM)

    def wait(self, index: int, timeout: float) -> int | None:
        """Wait for the worker to exit; its status, or None if it still runs after ``timeout``."""
        worker = self._workers.get(index)
        if worker is None:
            return None
        try:
            return worker.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def restart(self, index: int, *, graceful: bool = False, timeout: float = 10.0) -> int:
        """Replace the worker by a new process; returns the new PID.

        Args:
            graceful: SIGTERM and wait up to ``timeout`` first; otherwise SIGKILL at once.
        """
        if graceful:
            self.terminate(index)
            if self.wait(index, timeout) is None:
                self.kill(index)
        else:
            self.kill(index)
        self.wait(index, timeout)
        return self._spawn(index).process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every worker, SIGKILL those still running after ``timeout``; never hangs."""
        for index in list(self._workers):
            self.terminate(index)
        deadline = time.monotonic() + timeout
        for index in list(self._workers):
            if self.wait(index, max(0.0, deadline - time.monotonic())) is None:
                logger.warning("worker %d did not stop within %.1f s; killing it", index, timeout)
                self.kill(index)
                self.wait(index, 5.0)
        for worker in self._workers.values():
            worker.log.close()
        self._workers.clear()

    # -- internals -------------------------------------------------------------------------------
    def _spawn(self, index: int) -> _Worker:
        previous = self._workers.get(index)
        generation = previous.generation + 1 if previous else 0
        if previous is not None:
            previous.log.close()
        log = open(self.log_path(index), "ab")  # noqa: SIM115 - closed in stop() or on respawn
        env = dict(self._env)
        env[WORKER_ID_ENV] = f"local-{index}-{generation}"
        env.setdefault("PYTHONUNBUFFERED", "1")
        process = subprocess.Popen(
            self._command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own process group, like its own container: signals reach its children too, and a
            # Ctrl-C in the terminal reaches the stack, which stops workers in order.
            start_new_session=True,
        )
        worker = _Worker(index, generation, process, log)
        self._workers[index] = worker
        logger.info("started worker %d (pid %d): %s", index, process.pid, " ".join(self._command))
        return worker

    def _signal(self, index: int, signum: signal.Signals) -> None:
        worker = self._workers.get(index)
        if worker is None or worker.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # start_new_session made the worker the leader of a group whose id is its PID.
            os.killpg(worker.process.pid, signum)
