"""Ending with the process that started us.

Local mode starts the emulator and the worker agents in sessions of their own (so that a Ctrl-C in
a terminal reaches the stack, which stops them in order). If that starting process is SIGKILLed, or
dies of a SIGTERM Python does not handle, nothing would ever stop them: each watches its starter's
PID, named in its environment, and stops itself once that process is gone. On AWS the variable is
not set and nothing watches.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

#: The PID whose death ends this process (set by :class:`skyloom.local.LocalStack`).
PARENT_PID_ENV = "SKYLOOM_LOCAL_PARENT_PID"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    return True


def watch_parent_from_env(on_gone: Callable[[], None], period: float = 1.0) -> bool:
    """Call ``on_gone`` (once, from a daemon thread) when the process named by ``PARENT_PID_ENV``
    no longer exists; False, and nothing watched, when the variable is not set."""
    raw = os.environ.get(PARENT_PID_ENV, "")
    if not raw.isdigit():
        return False
    pid = int(raw)

    def watch() -> None:
        while alive(pid):
            time.sleep(period)
        on_gone()

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    return True
