"""One long-lived boto3 client per (process, service, settings): creating clients is slow and
clients are thread-safe, so every adapter in a process shares these."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
from botocore.config import Config

from skyloom.core.config import Settings

_lock = threading.Lock()
_clients: dict[tuple[str, Settings], Any] = {}

_CONFIG = Config(
    retries={"max_attempts": 8, "mode": "adaptive"},
    max_pool_connections=64,
    connect_timeout=5,
    read_timeout=70,
)


def client(service: str, settings: Settings) -> Any:
    key = (service, settings)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                region_name=settings.region,
                endpoint_url=settings.aws_endpoint,
                config=_CONFIG,
            )
            _clients[key] = found
        return found


# ----------------------------------------------------------------------------- API call counting
#: A directory: when set, every process that imports this module counts its AWS API calls by
#: (service, operation) and writes them to ``<dir>/calls-<pid>.json`` (benchmarks, see
#: ``skyloom bench``). Counted with botocore's ``before-call`` event, once per API call (boto3's
#: retries are not extra calls), on every client any library creates (boto3's and pynamodb's).
COUNT_API_CALLS_ENV = "SKYLOOM_COUNT_API_CALLS"
#: Seconds between two dumps: a SIGKILLed process loses at most this much of its counts.
DUMP_EVERY_SECONDS = 2.0

_call_counts: dict[tuple[str, str], int] = {}
_count_lock = threading.Lock()
_counting_dir: str | None = None


def _count_call(model: Any, **_: Any) -> None:
    key = (str(model.service_model.service_name), str(model.name))
    with _count_lock:
        _call_counts[key] = _call_counts.get(key, 0) + 1


def api_call_counts() -> dict[str, dict[str, int]]:
    """This process's AWS API calls so far, by service then operation (empty unless counting)."""
    with _count_lock:
        items = list(_call_counts.items())
    out: dict[str, dict[str, int]] = {}
    for (service, op), n in items:
        out.setdefault(service, {})[op] = n
    return out


def dump_api_call_counts() -> None:
    """Write this process's counts to its file in the counting directory (atomically)."""
    import json
    import os
    import sys

    if _counting_dir is None:
        return
    path = os.path.join(_counting_dir, f"calls-{os.getpid()}.json")
    body = {"pid": os.getpid(), "argv": sys.argv[:3], "worker": os.environ.get("SKYLOOM_WORKER_ID"),
            "calls": api_call_counts()}
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(body, f)
        os.replace(tmp, path)
    except OSError:
        pass  # counting must never break the process it observes


def start_counting_api_calls(directory: str) -> None:
    """Count every AWS API call of this process from now on (idempotent). Hooks client creation
    in botocore, so clients created later by any library are counted; dumps periodically and at
    exit."""
    import atexit

    import botocore.session

    global _counting_dir
    with _count_lock:
        if _counting_dir is not None:
            return
        _counting_dir = directory
    original = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        c = original(self, *args, **kwargs)
        c.meta.events.register("before-call", _count_call)
        return c

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    for existing in list(_clients.values()):
        existing.meta.events.register("before-call", _count_call)
    atexit.register(dump_api_call_counts)

    def dump_periodically() -> None:
        while True:
            time.sleep(DUMP_EVERY_SECONDS)
            dump_api_call_counts()

    threading.Thread(target=dump_periodically, name="api-call-counter", daemon=True).start()


def _start_counting_from_env() -> None:
    import os

    directory = os.environ.get(COUNT_API_CALLS_ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
        start_counting_api_calls(directory)


_start_counting_from_env()
