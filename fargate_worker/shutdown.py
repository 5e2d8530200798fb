"""Stopping the agent: the flags every thread reads, the signal handlers that set them, and the
deadline of a drain.

Two levels, as Spot interruptions need them: *stop* (first SIGTERM, ``max_tasks``, burst mode)
takes no new work and lets running tasks finish; *force* (second signal, grace period over) gives
every task back now. The force path raises :class:`ForcedShutdown`, a ``BaseException`` like rq's
shutdown signal, so that no ``except Exception`` around an AWS call can swallow it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from skyloom_server.fargate_worker.telemetry import logger

#: After a forced stop, how long slots get to give their tasks back before the process exits anyway.
FORCED_EXIT_SECONDS = 15.0


class ForcedShutdown(BaseException):
    """Stop now and give every task back. A BaseException on purpose: no ``except Exception`` on the
    way (around AWS calls) may swallow it."""


class StopControl:
    """The agent's stop flags and exit code, shared by all its threads.

    Args:
        grace_seconds: how long running tasks may finish after the first stop request.
    """

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        #: Take no new work (first signal, max_tasks, burst).
        self.stop = threading.Event()
        #: Give everything back now (second signal, grace over).
        self.force = threading.Event()
        #: Monotonic end of the grace period, once signalled.
        self.deadline: float | None = None
        self.exit_code = 0
        self._requests = 0
        self._previous_handlers: dict[int, Any] = {}
        self._on_drain: list[Callable[[], None]] = []

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when a drain starts (the first stop request): the agent warns its
        running tasks then, so that they can take a last checkpoint within the grace period."""
        self._on_drain.append(callback)

    def request(self, reason: str = "stop requested") -> None:
        """Stop as for SIGTERM: the first call stops polling at once and lets running tasks finish
        within the grace period, then gives back whatever is left; a second call gives it all back
        now. Called from the signal handler (main thread) or by tests."""
        self._requests += 1
        if self._requests == 1:
            self.deadline = time.monotonic() + self.grace_seconds
            self.stop.set()
            logger.warning(f"{reason}: draining, running tasks have {self.grace_seconds:g} s to finish")
            for callback in self._on_drain:
                try:
                    callback()
                except Exception:  # a warning that cannot be sent must not stop the drain
                    logger.exception("could not warn the running tasks of the drain")
        else:
            self.force.set()
            logger.warning(f"{reason} again: giving every task back now")

    def finish(self, reason: str) -> None:
        """Stop taking work without a deadline (max_tasks, burst): running tasks finish normally."""
        if not self.stop.is_set():
            logger.info(f"stopping: {reason}")
            self.stop.set()

    def broken(self, reason: str) -> None:
        """This agent cannot work (not a task's fault): finish, and exit 1 so that it is replaced."""
        self.exit_code = 1
        self.finish(reason)

    def wait_for(self, threads: Iterable[threading.Thread]) -> None:
        """Wait until ``threads`` end; past the grace deadline (or on a second signal), force.

        Raises:
            ForcedShutdown: the drain must end now.
        """
        threads = list(threads)
        while any(t.is_alive() for t in threads):
            if self.force.is_set():
                raise ForcedShutdown("second signal")
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.force.set()
                raise ForcedShutdown(f"grace period of {self.grace_seconds:g} s is over")
            self.force.wait(0.2)

    # ----------------------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may handle signals (tests run agents in threads)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only sets flags: the loops notice within a poll (<= poll_wait s) or 0.2 s while draining.
        self.request(signal.Signals(signum).name)
