"""Local mode: the whole of Skyloom on loopback, with no AWS account and no Docker.

``LocalStack`` is the entry point (``skyloom local up`` and the test fixture use it); ``discover``
finds one that ``skyloom local up`` is running. The pieces (emulator, gateway, stream poller,
scheduler, workers) are importable from their modules for tests that need one alone. All of it needs
``pip install 'skyloom[local]'`` (:mod:`skyloom.extras`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from skyloom.extras import require

# Before anything else: without the extra, a clear MissingExtra instead of "No module named 'moto'".
require("local", "the local stack (skyloom.local)")

from skyloom.local.credentials import (
    ENDPOINT_ENV,
    LOCAL_ACCESS_KEY_ID,
    LOCAL_ACCOUNT_ID,
    LOCAL_SECRET_ACCESS_KEY,
    local_user_arn,
)
from skyloom.local.discovery import LocalState, discover, read_state

if TYPE_CHECKING:
    from skyloom.local.stack import LocalStack


def __getattr__(name: str) -> Any:
    """``LocalStack`` on first use: a process that runs one piece of the stack (a submit container,
    ``python -m skyloom.local.containers``) starts a quarter of a second sooner without it."""
    if name == "LocalStack":
        from skyloom.local.stack import LocalStack

        return LocalStack
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENDPOINT_ENV",
    "LOCAL_ACCESS_KEY_ID",
    "LOCAL_ACCOUNT_ID",
    "LOCAL_SECRET_ACCESS_KEY",
    "LocalStack",
    "LocalState",
    "discover",
    "local_user_arn",
    "read_state",
]
