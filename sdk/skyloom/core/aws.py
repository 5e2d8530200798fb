"""One long-lived boto3 client per (process, service, settings): creating clients is slow and
clients are thread-safe, so every adapter in a process shares these."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from skyloom.core import wire
from skyloom.core.config import Settings

_lock = threading.Lock()
_clients: dict[tuple[str, Settings], Any] = {}

_CONFIG = Config(
    retries={"max_attempts": 8, "mode": "adaptive"},
    max_pool_connections=64,
    connect_timeout=5,
    read_timeout=70,
)
#: DynamoDB's own retry policy, as for pynamodb's clients (see ``skyloom.core.models.DYNAMODB_RETRIES``).
_DYNAMODB_CONFIG = _CONFIG.merge(Config(retries={"mode": "legacy", "total_max_attempts": 10}))


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
                endpoint_url=settings.endpoint(service),
                config=_DYNAMODB_CONFIG if service == "dynamodb" else _CONFIG,
            )
            wire.install_on(found)  # DynamoDB items in one pass, not through botocore's shape walk
            _clients[key] = found
        return found


# --------------------------------------------------------------------------- what a failure means
#: Error codes AWS answers when it is busy rather than when the request is wrong (botocore retries
#: them a few times; past those retries, the caller may still try again later).
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "RequestThrottled", "SlowDown", "TransactionInProgressException", "LimitExceededException",
})
#: Reasons DynamoDB cancels a transaction for when none of its conditions refused it.
TRANSIENT_CANCELLATIONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})


def transient_error(exc: BaseException) -> bool:
    """True when an AWS call failed because AWS was unreachable or busy, not because of the request:
    a connection error, a 5xx, throttling, a transaction cancelled by a conflict. Such a call may
    succeed if made again later, and nothing of it was the caller's fault. Looks through wrappers
    (pynamodb's exceptions keep the botocore error as ``cause``)."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, HTTPClientError | ConnectionError):
            return True
        if isinstance(current, ClientError):
            response: dict[str, Any] = dict(current.response or {})
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            code = str(response.get("Error", {}).get("Code") or "")
            reasons = {str(r.get("Code")) for r in response.get("CancellationReasons") or [] if isinstance(r, dict)}
            if code == "TransactionCanceledException":
                return bool(reasons & TRANSIENT_CANCELLATIONS) and "ConditionalCheckFailed" not in reasons
            return status >= 500 or code in THROTTLING_CODES
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    return False


# ------------------------------------------------------------------------- hooks on every client
_hooks: list[Callable[[Any], None]] = []
_hooks_lock = threading.Lock()


def on_every_client(hook: Callable[[Any], None]) -> None:
    """Call ``hook(client)`` on every botocore client of this process: the ones this module holds
    now, and every one created from now on by any library (boto3's, pynamodb's), by hooking client
    creation in botocore. Idempotent per hook. API call counting and local mode's fault injection
    (:mod:`skyloom.local.faults`) observe AWS calls this way, below the code under test."""
    import botocore.session

    with _hooks_lock:
        if hook in _hooks:
            return
        _hooks.append(hook)
        if len(_hooks) == 1:
            original = botocore.session.Session.create_client

            def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
                c = original(self, *args, **kwargs)
                for each in list(_hooks):
                    each(c)
                return c

            botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    for existing in list(_clients.values()):
        hook(existing)


# ----------------------------------------------------------------------------- API call counting
#: A directory: when set, every process that imports this module counts its AWS API calls by
#: (service, operation) and writes them to ``<dir>/calls-<pid>.json`` (benchmarks, see
#: ``skyloom bench``). Counted with botocore's ``before-call`` event, once per API call (boto3's
#: retries are not extra calls), on every client any library creates (boto3's and pynamodb's).
#: Other per-process counters (the faults injected, :mod:`skyloom.local.faults`) ride in the same
#: file under their own key (:func:`add_counter`).
COUNT_API_CALLS_ENV = "SKYLOOM_COUNT_API_CALLS"
#: Seconds between two dumps: a SIGKILLed process loses at most this much of its counts.
DUMP_EVERY_SECONDS = 2.0

Counts = dict[str, dict[str, int]]

_call_counts: dict[tuple[str, str], int] = {}
_count_lock = threading.Lock()
_counting_dir: str | None = None
_counters: dict[str, Callable[[], Counts]] = {}


def _count_call(model: Any, **_: Any) -> None:
    key = (str(model.service_model.service_name), str(model.name))
    with _count_lock:
        _call_counts[key] = _call_counts.get(key, 0) + 1


def _count_calls_of(c: Any) -> None:
    c.meta.events.register("before-call", _count_call, unique_id="skyloom-count-calls")


def api_call_counts() -> Counts:
    """This process's AWS API calls so far, by service then operation (empty unless counting)."""
    with _count_lock:
        items = list(_call_counts.items())
    out: Counts = {}
    for (service, op), n in items:
        out.setdefault(service, {})[op] = n
    return out


def add_counter(key: str, counts: Callable[[], Counts]) -> None:
    """Dump ``counts()`` under ``key`` in this process's counts file too (two-level, like the calls)."""
    _counters[key] = counts


def counting_directory() -> str | None:
    """Where this process dumps its counts, None if it does not count."""
    return _counting_dir


def dump_api_call_counts() -> None:
    """Write this process's counts to its file in the counting directory (atomically)."""
    import json
    import os
    import sys

    directory = _counting_dir
    if directory is None:
        return
    path = os.path.join(directory, f"calls-{os.getpid()}.json")
    body: dict[str, Any] = {"pid": os.getpid(), "argv": sys.argv[:3], "worker": os.environ.get("SKYLOOM_WORKER_ID"),
                            "calls": api_call_counts()}
    for key, counts in list(_counters.items()):
        body[key] = counts()
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(body, f)
        os.replace(tmp, path)
    except OSError:
        pass  # counting must never break the process it observes


def read_dumps(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every process's latest dump in ``directory`` (unreadable or half-written files skipped)."""
    import json
    from pathlib import Path

    found: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("calls-*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(body, dict):
            found.append(body)
    return found


def collect_counts(directory: str | os.PathLike[str], key: str = "calls") -> Counts:
    """The sum over every process's latest dump of the counts under ``key`` ("calls" by default)."""
    total: Counts = {}
    for body in read_dumps(directory):
        counts = body.get(key)
        if not isinstance(counts, dict):
            continue
        for group, ops in counts.items():
            for op, n in ops.items():
                total.setdefault(group, {})[op] = total.get(group, {}).get(op, 0) + int(n)
    return total


def start_counting_api_calls(directory: str) -> None:
    """Count every AWS API call of this process from now on, and dump the counts into ``directory``
    periodically and at exit. Calling it again only changes the directory (a second local stack
    of the same process dumps into its own run directory)."""
    import atexit

    global _counting_dir
    with _count_lock:
        first = _counting_dir is None
        _counting_dir = directory
    if not first:
        return
    on_every_client(_count_calls_of)
    atexit.register(dump_api_call_counts)

    def dump_periodically() -> None:
        while True:
            time.sleep(DUMP_EVERY_SECONDS)
            dump_api_call_counts()

    threading.Thread(target=dump_periodically, name="api-call-counter", daemon=True).start()


def _start_counting_from_env() -> None:
    directory = os.environ.get(COUNT_API_CALLS_ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
        start_counting_api_calls(directory)


def _start_faults_from_env() -> None:
    """Local mode's fault injection, when the environment asks for it (see :mod:`skyloom.local.faults`)."""
    if any(name.startswith(FAULTS_ENV_PREFIX) for name in os.environ):
        import importlib

        importlib.import_module("skyloom.local.faults").start_from_env()


#: Environment variables of local mode's fault injection start with this.
FAULTS_ENV_PREFIX = "SKYLOOM_FAULTS_"

_start_counting_from_env()
_start_faults_from_env()
