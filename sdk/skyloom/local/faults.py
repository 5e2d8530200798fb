"""Fault injection: AWS's own failures, injected below Skyloom into every process of a local stack.

A busy system on AWS meets these every day, and each one is injected because of what it tests:

``transaction_conflict``
    DynamoDB cancels a ``TransactWriteItems`` with ``TransactionCanceledException``, reason
    ``TransactionConflict``, when another transaction or write is in flight on one of its items:
    a fan-in whose inputs complete at once, a cancellation racing a failure, a sweeper racing a
    worker. Nothing is written and botocore does **not** retry it: the caller must.
``throttling``
    An on-demand DynamoDB table throttles a partition that heats up faster than it splits (a burst
    after a quiet hour, a hot key) with ``ThrottlingException``, and a transaction then is
    cancelled with reason ``ThrottlingError`` (not retried by botocore); SQS throttles an API's
    rate with ``RequestThrottled``; S3 answers ``503 SlowDown`` on a hot prefix. botocore retries
    the plain calls, with backoff and, in adaptive mode, a client-side rate limit.
``server_error``
    Every service answers a small share of requests ``500 InternalServerError`` or ``503
    ServiceUnavailable`` (a host replaced, a partition moving); botocore retries them. Injected
    before the request reaches the emulator, so the call had no effect, as in most such answers.
``batch_failure``
    SQS's batch calls (``SendMessageBatch``, ``DeleteMessageBatch``,
    ``ChangeMessageVisibilityBatch``) answer ``200`` and report failures entry by entry
    (``InternalError``, not the sender's fault): botocore sees a success and cannot retry them,
    the caller must. Injected as a whole batch failed.
``blackout``
    A process loses the network for a few seconds (an ENI or NAT hiccup, a degraded Spot host, a
    frozen Lambda sandbox): every call fails with ``EndpointConnectionError`` (botocore retries a
    few times) for ``seconds`` every ``every`` seconds, one process at a time, chosen at random
    among the processes of the stack that call AWS. Each process decides alone from what it reads
    in the counts directory, so a process starting or dying mid-window may make it two or none.

How: a handler on botocore's ``before-send`` event of every client of the process
(:func:`skyloom.core.aws.on_every_client`, which reaches boto3's and pynamodb's clients alike)
answers in AWS's place with an :class:`~botocore.awsrequest.AWSResponse` in the service's wire
format; botocore parses it and applies its own retry rules, so the code under test is the
production code. It is registered first, ahead of moto's in-process stub (functional tests). The
SDK signs its REST requests itself, without a botocore client, so the local API gateway asks
:func:`api_gateway_fault` before invoking the function: ``503``/``429`` at the same rates, and a
dropped connection while the gateway's process is blacked out.

Switched on by environment variables, off by default; every process of a local stack inherits them
and :mod:`skyloom.core.aws` starts injecting at import (:class:`~skyloom.local.LocalStack` also
starts it in its own process)::

    SKYLOOM_FAULTS_TRANSACTION_CONFLICT=0.1   share of TransactWriteItems cancelled by a conflict
    SKYLOOM_FAULTS_SERVER_ERROR=0.05          share of all calls answered 500 or 503
    SKYLOOM_FAULTS_THROTTLING=0.01            share of all calls throttled
    SKYLOOM_FAULTS_BATCH_FAILURE=0.02         share of SQS batch calls whose every entry fails
    SKYLOOM_FAULTS_BLACKOUT=3/20              a 3 s blackout of one process every 20 s
    SKYLOOM_FAULTS_SEED=7                     reproducible draws (per process)
    SKYLOOM_FAULTS_OPERATIONS=TransactWriteItems,SendMessageBatch   only these (default: all)
    SKYLOOM_FAULTS_LIMIT=1                    at most this many faults per process

Each process counts the faults it fired, by kind and ``service.Operation``; the counts go into the
process's API-call counts file (``SKYLOOM_COUNT_API_CALLS``) under ``"faults"``, and
``skyloom.core.aws.collect_counts(directory, "faults")`` sums them over a stack. A blackout needs
that directory: its files are how the processes of a stack know each other.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HTTPHeaders
from botocore.exceptions import EndpointConnectionError
from pydantic import Field

from skyloom.core import aws, models
from skyloom.core.config import EnvReader
from skyloom.runtime.lifeline import alive

ENV_PREFIX = aws.FAULTS_ENV_PREFIX
TRANSACTION_OPERATION = "TransactWriteItems"
#: SQS's batch calls, which report failures entry by entry in a successful answer.
BATCH_OPERATIONS = frozenset({"SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"})
#: Where an answered request is pointed, so that no other handler of the event acts on it.
NOWHERE = "https://skyloom-injected-fault.invalid/"


class _FaultsEnv(EnvReader):
    """The ``SKYLOOM_FAULTS_*`` variables (:meth:`FaultConfig.to_env` writes them)."""

    transaction_conflict: float | None = Field(None, validation_alias=ENV_PREFIX + "TRANSACTION_CONFLICT")
    server_error: float | None = Field(None, validation_alias=ENV_PREFIX + "SERVER_ERROR")
    throttling: float | None = Field(None, validation_alias=ENV_PREFIX + "THROTTLING")
    batch_failure: float | None = Field(None, validation_alias=ENV_PREFIX + "BATCH_FAILURE")
    blackout: str | None = Field(None, validation_alias=ENV_PREFIX + "BLACKOUT")
    seed: int | None = Field(None, validation_alias=ENV_PREFIX + "SEED")
    operations: str | None = Field(None, validation_alias=ENV_PREFIX + "OPERATIONS")
    limit: int | None = Field(None, validation_alias=ENV_PREFIX + "LIMIT")


class FaultKind(StrEnum):
    """What went wrong (see the module docstring for each): the first key of the counts."""

    TRANSACTION_CONFLICT = "transaction_conflict"
    THROTTLING = "throttling"
    SERVER_ERROR = "server_error"
    BATCH_FAILURE = "batch_failure"
    BLACKOUT = "blackout"


@dataclass(frozen=True)
class FaultConfig:
    """What to inject. Rates are shares of calls (0 to 1); see the module docstring for each kind.

    Example:
        >>> FaultConfig(transaction_conflict=0.1, server_error=0.05, blackout_seconds=3, blackout_every=20)
    """

    transaction_conflict: float = 0.0
    server_error: float = 0.0
    throttling: float = 0.0
    batch_failure: float = 0.0
    blackout_seconds: float = 0.0
    blackout_every: float = 0.0
    seed: int = 0
    #: Only these operations (``TransactWriteItems``, ``SendMessageBatch``...); empty: all.
    operations: frozenset[str] = field(default_factory=frozenset)
    #: At most this many faults in each process (None: no limit); aims a test at one failure.
    limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("transaction_conflict", "server_error", "throttling", "batch_failure"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {name} must be between 0 and 1, not {value}")
        if self.blackout_seconds < 0 or (self.blackout_seconds and self.blackout_every <= self.blackout_seconds):
            raise ValueError("a blackout of S seconds every E seconds needs 0 < S < E")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")

    @property
    def enabled(self) -> bool:
        return bool(self.transaction_conflict or self.server_error or self.throttling or self.batch_failure
                    or self.blackout_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultConfig:
        """The configuration of the ``SKYLOOM_FAULTS_*`` variables (all off when none is set)."""
        given = _FaultsEnv.read(environ).given()
        blackout = given.pop("blackout", None)
        if blackout is not None:
            try:
                left, right = blackout.split("/")
                given["blackout_seconds"], given["blackout_every"] = float(left), float(right)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}BLACKOUT must be SECONDS/EVERY (e.g. 3/20), not {blackout!r}") from None
        if "operations" in given:
            given["operations"] = frozenset(o.strip() for o in given["operations"].split(",") if o.strip())
        if given.get("limit", 0) < 0:
            given["limit"] = None  # a negative limit is "no limit", as unset
        return cls(**given)

    def to_env(self) -> dict[str, str]:
        """The variables that give another process this configuration."""
        env = {
            ENV_PREFIX + "TRANSACTION_CONFLICT": repr(self.transaction_conflict),
            ENV_PREFIX + "SERVER_ERROR": repr(self.server_error),
            ENV_PREFIX + "THROTTLING": repr(self.throttling),
            ENV_PREFIX + "BATCH_FAILURE": repr(self.batch_failure),
            ENV_PREFIX + "SEED": str(self.seed),
        }
        if self.blackout_seconds:
            env[ENV_PREFIX + "BLACKOUT"] = f"{self.blackout_seconds!r}/{self.blackout_every!r}"
        if self.operations:
            env[ENV_PREFIX + "OPERATIONS"] = ",".join(sorted(self.operations))
        if self.limit is not None:
            env[ENV_PREFIX + "LIMIT"] = str(self.limit)
        return env


# ------------------------------------------------------------------------------------ blackouts
def blackout_victim(seed: int, window: int, pids: Iterable[int]) -> int | None:
    """The process cut off in time window ``window``: the lowest draw of (seed, window, pid). Each
    process computes it alone and, seeing the same processes, all agree."""
    return min(pids, key=lambda pid: random.Random(f"{seed}:{window}:{pid}").random(), default=None)


def blackout_start(seed: int, window: int, seconds: float, every: float) -> float:
    """When window ``window``'s blackout starts (epoch seconds): at an offset drawn from (seed,
    window), so that it falls anywhere in the window but always ends inside it."""
    return window * every + random.Random(f"{seed}:{window}").random() * (every - seconds)


class _Blackout:
    """Whether this process is cut off now. Time is cut into windows of ``every`` seconds; in each,
    :func:`blackout_victim` among the processes that call AWS (an API-call counts file listing
    calls, a live pid) is cut off for ``seconds`` from :func:`blackout_start`."""

    def __init__(self, config: FaultConfig, directory: str) -> None:
        self._seconds = config.blackout_seconds
        self._every = config.blackout_every
        self._seed = config.seed
        self._directory = directory
        self._window = -1
        self._start = 0.0
        self._mine = False

    def active(self, now: float) -> bool:
        window = int(now // self._every)
        if window != self._window:
            self._window = window
            self._start = blackout_start(self._seed, window, self._seconds, self._every)
            self._mine = blackout_victim(self._seed, window, self._processes()) == os.getpid()
        return self._mine and self._start <= now < self._start + self._seconds

    def _processes(self) -> set[int]:
        """What every process reads alike: the counts files (a process joins at its first dump)."""
        return {int(body["pid"]) for body in aws.read_dumps(self._directory)
                if body.get("calls") and isinstance(body.get("pid"), int) and alive(int(body["pid"]))}


# ------------------------------------------------------------------------------------- the state
_lock = threading.Lock()
_config: FaultConfig | None = None
_rng = random.Random()
_fired = 0
_blackout: _Blackout | None = None
_counts: dict[tuple[str, str], int] = {}
_hooked = False


def activate(config: FaultConfig) -> None:
    """Inject ``config``'s faults into every AWS call of this process from now on (a disabled
    config stops injecting). A blackout needs the process to count its API calls (see above)."""
    global _config, _rng, _fired, _blackout, _hooked
    directory = aws.counting_directory()
    if config.blackout_seconds and directory is None:
        raise ValueError(f"a blackout needs {aws.COUNT_API_CALLS_ENV} (the processes find each other there)")
    with _lock:
        _config = config if config.enabled else None
        _rng = random.Random(f"{config.seed}:{os.getpid()}")
        _fired = 0
        _blackout = _Blackout(config, directory) if config.blackout_seconds and directory else None
    if not _hooked:
        aws.on_every_client(_hook)
        models.reset_connections()  # pynamodb's clients made before the hook: rebuilt with it
        aws.add_counter("faults", fault_counts)
        _hooked = True


def deactivate() -> None:
    """Stop injecting (the hooks stay, and do nothing)."""
    global _config
    with _lock:
        _config = None


def active() -> FaultConfig | None:
    return _config


@contextlib.contextmanager
def injecting(config: FaultConfig) -> Iterator[None]:
    """Inject ``config``'s faults in this process for the duration of the block (tests)."""
    previous = _config
    activate(config)
    try:
        yield
    finally:
        if previous is None:
            deactivate()
        else:
            activate(previous)


def start_from_env() -> None:
    """Activate the configuration of the environment, if it enables anything (at import of
    :mod:`skyloom.core.aws`, in every process of a local stack started with faults). A process
    that is to start the stack itself (``skyloom local up``) has no counts directory yet: with a
    blackout configured, it leaves injection to the :class:`~skyloom.local.LocalStack`."""
    config = FaultConfig.from_env()
    if config.enabled and (not config.blackout_seconds or aws.counting_directory() is not None):
        activate(config)


def fault_counts() -> dict[str, dict[str, int]]:
    """The faults this process fired so far: kind -> ``service.Operation`` -> count."""
    with _lock:
        items = list(_counts.items())
    out: dict[str, dict[str, int]] = {}
    for (kind, where), n in items:
        out.setdefault(kind, {})[where] = n
    return out


def _choose(config: FaultConfig, service: str, operation: str) -> FaultKind | None:
    """Whether this call fails, and how (one draw per kind, under the lock: counts stay exact)."""
    global _fired
    if config.operations and operation not in config.operations:
        return None
    with _lock:
        if config.limit is not None and _fired >= config.limit:
            return None
        kind: FaultKind | None = None
        if _blackout is not None and _blackout.active(time.time()):
            kind = FaultKind.BLACKOUT
        elif operation == TRANSACTION_OPERATION and _rng.random() < config.transaction_conflict:
            kind = FaultKind.TRANSACTION_CONFLICT
        elif service == "sqs" and operation in BATCH_OPERATIONS and _rng.random() < config.batch_failure:
            kind = FaultKind.BATCH_FAILURE
        elif _rng.random() < config.throttling:
            kind = FaultKind.THROTTLING
        elif _rng.random() < config.server_error:
            kind = FaultKind.SERVER_ERROR
        if kind is not None:
            _fired += 1
            key = (kind.value, f"{service}.{operation}")
            _counts[key] = _counts.get(key, 0) + 1
        return kind


# --------------------------------------------------------------------------------- botocore side
def _hook(client: Any) -> None:
    handler = functools.partial(_before_send, client.meta.service_model)
    client.meta.events.register_first("before-send", handler, unique_id="skyloom-faults")


class _Body:
    """The ``raw`` of an AWSResponse: botocore reads error bodies through ``stream()``."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _before_send(service_model: Any, request: AWSPreparedRequest, event_name: str = "", **_: Any) -> AWSResponse | None:
    config = _config
    if config is None:
        return None
    service = str(service_model.service_name)
    operation = event_name.rsplit(".", 1)[-1]
    kind = _choose(config, service, operation)
    if kind is None:
        return None
    if kind is FaultKind.BLACKOUT:
        raise EndpointConnectionError(endpoint_url=str(request.url))
    answer = _answer(kind, service, operation, request, service_model)
    # botocore runs every before-send handler and keeps the first answer: a later one (moto's
    # in-process stub in functional tests) would still carry out a request AWS never received.
    request.url = NOWHERE
    return answer


def _answer(
    kind: FaultKind, service: str, operation: str, request: AWSPreparedRequest, service_model: Any
) -> AWSResponse:
    if operation == TRANSACTION_OPERATION and kind in (FaultKind.TRANSACTION_CONFLICT, FaultKind.THROTTLING):
        reason = "TransactionConflict" if kind is FaultKind.TRANSACTION_CONFLICT else "ThrottlingError"
        return _cancelled(request, service_model, reason)
    if kind is FaultKind.BATCH_FAILURE:
        return _batch_failed(request)
    if kind is FaultKind.THROTTLING:
        status, code = {"s3": (503, "SlowDown"), "sqs": (403, "RequestThrottled")}.get(
            service, (400, "ThrottlingException"))
        return _error(request, service_model, status, code, "Rate exceeded (injected fault)")
    with _lock:
        unavailable = _rng.random() < 0.5
    status, code = (503, "ServiceUnavailable") if unavailable else (
        500, "InternalServerError" if service.startswith("dynamodb") else "InternalError")
    return _error(request, service_model, status, code, "We encountered an internal error (injected fault)")


def _cancelled(request: AWSPreparedRequest, service_model: Any, reason: str) -> AWSResponse:
    """DynamoDB's answer to a cancelled transaction: one reason per item, ``None`` but for one."""
    try:
        body = request.body if isinstance(request.body, bytes | str) else b"{}"
        items = max(1, len(json.loads(body or b"{}").get("TransactItems", [])))
    except (ValueError, AttributeError):
        items = 1
    with _lock:
        culprit = _rng.randrange(items)
    codes = ["None"] * items
    codes[culprit] = reason
    reasons = [{"Code": c} if c == "None" else {"Code": c, "Message": f"{reason} (injected fault)"} for c in codes]
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{', '.join(codes)}]"
    return _error(request, service_model, 400, "TransactionCanceledException", message,
                  extra={"CancellationReasons": reasons})


def _batch_failed(request: AWSPreparedRequest) -> AWSResponse:
    """SQS's answer to a batch call whose every entry failed on SQS's side (JSON protocol)."""
    try:
        body = request.body if isinstance(request.body, bytes | str) else b"{}"
        ids = [str(e["Id"]) for e in json.loads(body or b"{}").get("Entries", [])]
    except (ValueError, AttributeError, KeyError, TypeError):
        ids = []
    failed = [{"Id": i, "SenderFault": False, "Code": "InternalError", "Message": "injected fault"} for i in ids]
    answer = json.dumps({"Successful": [], "Failed": failed}).encode()
    headers = {"x-amzn-RequestId": f"INJECTED{random.getrandbits(48):012X}",
               "Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse(str(request.url), 200, HTTPHeaders.from_dict(headers), _Body(answer))


def _error(
    request: AWSPreparedRequest, service_model: Any, status: int, code: str, message: str,
    extra: dict[str, Any] | None = None,
) -> AWSResponse:
    """An error answer in the service's wire protocol (JSON for DynamoDB and SQS, XML for S3)."""
    request_id = f"INJECTED{random.getrandbits(48):012X}"
    headers = {"x-amzn-RequestId": request_id}
    if service_model.protocol == "json":
        prefix = service_model.metadata.get("targetPrefix") or service_model.service_name
        body = json.dumps({"__type": f"{prefix}#{code}", "message": message, **(extra or {})}).encode()
        headers["Content-Type"] = f"application/x-amz-json-{service_model.metadata.get('jsonVersion', '1.0')}"
        if service_model.metadata.get("awsQueryCompatible") is not None:
            headers["x-amzn-query-error"] = f"{code};{'Sender' if status < 500 else 'Receiver'}"
    else:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>{request_id}</RequestId></Error>").encode()
        headers["Content-Type"] = "application/xml"
    return AWSResponse(str(request.url), status, HTTPHeaders.from_dict(headers), _Body(body))


# ------------------------------------------------------------------------------ API gateway side
@dataclass(frozen=True)
class GatewayFault:
    """What the local API gateway answers instead of invoking the function; ``status`` 0 means it
    drops the connection without an answer (its process is blacked out)."""

    status: int
    error_type: str
    message: str


def api_gateway_fault() -> GatewayFault | None:
    """The fault the local API gateway injects into this request, if any (counted as
    ``execute-api.Invoke``): 503 for a server error, 429 for throttling, a drop in a blackout."""
    config = _config
    if config is None:
        return None
    kind = _choose(config, "execute-api", "Invoke")
    if kind is FaultKind.BLACKOUT:
        return GatewayFault(0, "", "")
    if kind is FaultKind.THROTTLING:
        return GatewayFault(429, "TooManyRequestsException", "Too Many Requests (injected fault)")
    if kind is FaultKind.SERVER_ERROR:
        return GatewayFault(503, "ServiceUnavailableException", "Service Unavailable (injected fault)")
    return None
