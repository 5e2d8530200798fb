"""The Python and cloudpickle that each partition's workers run, recorded where the API reads them.

A function shipped by value is pickled by the client's cloudpickle for the client's Python and
unpickled by the worker's: when the two differ, the task fails late, as a ``CallSpecError`` on the
worker, or worse, runs on subtly different bytecode. Each agent records its versions when it starts,
as one small item per partition (:class:`~skyloom.core.models.WorkerEnvironmentModel`), and
``GET /environment`` returns them in one read, so that a client checks once, before its first
submission of a shipped function, and says what to do.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from skyloom.core import clock
from skyloom.core.ddb import condition_failed
from skyloom.core.models import WorkerEnvironmentModel

#: Prefix of the items' keys: '#' never occurs in a session id, so no session can collide.
KEY_PREFIX = "#environment#"


@dataclass(frozen=True)
class Versions:
    """What decides whether a pickled function loads: Python's major.minor and cloudpickle's version."""

    python: str
    cloudpickle: str


def local_versions() -> Versions:
    """This interpreter's versions.

    Example:
        >>> local_versions()
        Versions(python='3.11', cloudpickle='3.1.1')
    """
    try:
        pickler = version("cloudpickle")
    except PackageNotFoundError:  # vendored or absent: say so rather than guess
        pickler = "unknown"
    return Versions(python=f"{sys.version_info.major}.{sys.version_info.minor}", cloudpickle=pickler)


def record(partition: str, versions: Versions) -> None:
    """Record what this worker runs for ``partition``; the newest record wins (agents of two images
    during a rolling deploy: the one started last is the one new tasks will mostly meet)."""
    now = clock.now()
    item = WorkerEnvironmentModel(
        f"{KEY_PREFIX}{partition}",
        partition=partition,
        python=versions.python,
        cloudpickle=versions.cloudpickle,
        recorded_at=now,
    )
    try:
        item.save(
            condition=WorkerEnvironmentModel.recorded_at.does_not_exist() | (WorkerEnvironmentModel.recorded_at < now)
        )
    except Exception as exc:
        if not condition_failed(exc):  # a newer record is already there: nothing to do
            raise


def read(partitions: Sequence[str]) -> dict[str, tuple[Versions, float]]:
    """The recorded versions of ``partitions`` (one batched read), with when they were recorded;
    a partition where no agent has started yet is absent."""
    keys = [f"{KEY_PREFIX}{p}" for p in dict.fromkeys(partitions)]
    found: dict[str, tuple[Versions, float]] = {}
    for item in WorkerEnvironmentModel.batch_get(keys):
        found[item.partition] = (Versions(python=item.python, cloudpickle=item.cloudpickle), float(item.recorded_at))
    return found
