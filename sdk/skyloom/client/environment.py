"""Checking, before shipping a function, that the workers can load what this client pickles.

A ``@skyloom.task`` function travels by value: cloudpickle on this Python pickles it, cloudpickle
on the worker's Python unpickles it. Different Python minor versions or cloudpickle versions fail
there, late and cryptically (``CallSpecError``), or run subtly different bytecode. The workers
record their versions per partition when they start (:mod:`skyloom.core.environment`); the client
reads them once (``GET /environment``, cached for the client's life) before its first submission of
a shipped function, and raises :class:`~skyloom.errors.EnvironmentMismatch` saying what to do.

Low-level handlers installed on the workers carry bytes, not pickled code: they are not checked,
and a client that only uses them never makes the request. A partition where no agent has started
yet has no record and is not checked (its first tasks would tell).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version

from skyloom.core.protocol import EnvironmentInfo, WorkerVersions
from skyloom.errors import EnvironmentMismatch, NotFound


def client_versions() -> tuple[str, str]:
    """This client's Python major.minor and cloudpickle version."""
    try:
        pickler = version("cloudpickle")
    except PackageNotFoundError:
        pickler = "unknown"
    return f"{sys.version_info.major}.{sys.version_info.minor}", pickler


class EnvironmentCheck:
    """One client's check: one read of the workers' versions, then answers from memory.

    Args:
        fetch: reads the API's :class:`EnvironmentInfo` (``GET /environment``).
        local: this client's ``(python, cloudpickle)``; the running interpreter's by default.
    """

    def __init__(self, fetch: Callable[[], EnvironmentInfo], local: tuple[str, str] | None = None) -> None:
        self._fetch = fetch
        self._local = local or client_versions()
        self._lock = threading.Lock()
        self._info: EnvironmentInfo | None = None
        self._known = False
        self._checked: set[str] = set()

    def check(self, partitions: Iterable[str | None]) -> None:
        """Raise if the workers of any of ``partitions`` (None: the default one) cannot load this
        client's pickles.

        Raises:
            EnvironmentMismatch: naming the partition, both sides' versions and what to do.
        """
        with self._lock:
            info = self._load()
            if info is None:
                return
            for name in {p or info.default_partition for p in partitions} - self._checked:
                workers = info.partitions.get(name)
                if workers is not None:
                    self._compare(name, workers)
                self._checked.add(name)

    def _load(self) -> EnvironmentInfo | None:
        if not self._known:
            try:
                self._info = self._fetch()
            except NotFound:  # an API older than this check: nothing to compare with
                self._info = None
            self._known = True
        return self._info

    def _compare(self, partition: str, workers: WorkerVersions) -> None:
        python, pickler = self._local
        if workers.python == python and workers.cloudpickle == pickler:
            return
        raise EnvironmentMismatch(
            f"partition {partition!r}: the workers run Python {workers.python} with cloudpickle "
            f"{workers.cloudpickle}, this client Python {python} with cloudpickle {pickler}; functions "
            "pickled here would not load there. Run the client on Python "
            f"{workers.python} with `pip install cloudpickle=={workers.cloudpickle}`, or build the "
            f"partition's worker image with Python {python} and cloudpickle {pickler} (README: "
            "'Your packages on the workers').",
            field="partition",
            details={
                "partition": partition,
                "workers": {"python": workers.python, "cloudpickle": workers.cloudpickle},
                "client": {"python": python, "cloudpickle": pickler},
            },
        )
