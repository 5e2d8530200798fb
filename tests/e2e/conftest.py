"""End-to-end fixtures: an SDK client of the session's local stack, over real HTTP and SigV4.

The worker agents import the low-level handlers of ``tests.e2e.test_graphs`` by module name, so
their environment needs ``SKYLOOM_HANDLER_MODULES`` and the repository on ``PYTHONPATH``. The local
stack passes this process's environment to the workers it starts, and it starts after collection,
so setting both here (at import, during collection) is early enough.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import skyloom
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY

REPO = Path(__file__).resolve().parents[2]
HANDLER_MODULE = "tests.e2e.test_graphs"


def _append_env(name: str, value: str, sep: str) -> None:
    parts = [p for p in os.environ.get(name, "").split(sep) if p]
    if value not in parts:
        os.environ[name] = sep.join([*parts, value])


_append_env("SKYLOOM_HANDLER_MODULES", HANDLER_MODULE, ",")
# The embedded emulator answers DynamoDB with its own serializer and applies plain updates itself;
# here it also does both moto's way and fails any request where the two differ
# (skyloom/local/moto_app.py, skyloom/local/moto_updates.py).
os.environ.setdefault("SKYLOOM_MOTO_VERIFY_SERIALIZER", "1")
os.environ.setdefault("SKYLOOM_MOTO_UPDATE_CHECK", "1")
_append_env("PYTHONPATH", str(REPO), os.pathsep)


@pytest.fixture
def client(local_stack: Any) -> Iterator[skyloom.Client]:
    """A client of the stack, signing with the local credentials; closed (and flushed) after the test."""
    c = skyloom.connect(local_stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
    try:
        yield c
    finally:
        c.close()
