"""The stack's storage as a task's child process reaches it itself, for what cannot wait for the
agent: a checkpoint must be durable before ``skyloom.checkpoint()`` returns, and a lazy input is
fetched when the task asks for it. Only tasks that do either pay for the import and the binding.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skyloom.core.config import Settings

_lock = threading.Lock()
_settings: Settings | None = None


def settings() -> Settings:
    """The stack's settings in this process, from the environment the agent passed on to its child;
    the models are bound once per process."""
    global _settings
    with _lock:
        if _settings is None:
            from skyloom.core import models
            from skyloom.core.config import Settings

            found = Settings.from_env()
            models.bind(found)
            _settings = found
        return _settings


def use(found: Settings) -> None:
    """Use ``found`` rather than the environment's (a test running a task in its own process)."""
    global _settings
    with _lock:
        _settings = found
