"""The HTTP transport: SigV4-signed JSON over one pooled keep-alive connection manager per client.

Every write the SDK makes carries ids chosen by the client, so replaying a request changes nothing
on the server; that is what makes it safe to retry any request, POSTs included, on connection
errors, 5xx and 429. Large blobs go straight to S3 through presigned URLs, unsigned, over the same
pool. botocore and urllib3 are imported when a transport is built rather than with the SDK, so the
worker's child processes (which never talk HTTP) start fast.
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any, Protocol

from skyloom.errors import (
    ERRORS_BY_CODE,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    SkyloomError,
    TaskFailed,
    Unauthorized,
    WaitTimeout,
)

if TYPE_CHECKING:
    import urllib3
    from botocore.credentials import Credentials

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_STATUS_FALLBACK: dict[int, type[SkyloomError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    408: WaitTimeout,
    409: Conflict,
    413: PayloadTooLarge,
}


class Transport(Protocol):
    """What the client needs from the network; tests substitute an in-memory fake."""

    @property
    def endpoint(self) -> str:
        """Base URL of the API, for messages."""
        ...

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """Send a JSON body to ``endpoint + path`` and return the decoded JSON answer.

        Raises:
            SkyloomError: the subclass named by the error body's ``error`` code.
            ConnectionFailed: the endpoint stayed unreachable through every retry.
        """
        ...

    def put_url(self, url: str, data: bytes) -> None:
        """Upload ``data`` to a presigned S3 URL."""
        ...

    def get_url(self, url: str) -> bytes:
        """Download a presigned S3 URL."""
        ...

    def close(self) -> None: ...


def error_from_response(status: int, raw: bytes, where: str) -> SkyloomError:
    """The SkyloomError an error answer stands for: by its ``error`` code, else by HTTP status.

    API Gateway's own errors (throttling, a missing route) carry only ``message``, hence the
    status fallback.
    """
    body: Any = None
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    code = body.get("error")
    cls = ERRORS_BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = _STATUS_FALLBACK.get(status, SkyloomError)
    message = body.get("message") or raw[:300].decode("utf-8", "replace").strip() or f"HTTP {status}"
    message = f"{message} ({where} -> {status})" if not isinstance(code, str) else str(message)
    details = body.get("details") if isinstance(body.get("details"), dict) else None
    if issubclass(cls, TaskFailed):
        return cls(message, details=details)
    field = body.get("field") if isinstance(body.get("field"), str) else None
    return cls(message, field=field, details=details)


def transient(exc: BaseException) -> bool:
    """True for a failure worth trying again later, after the transport's own retries: the endpoint
    unreachable, or an answer naming no Skyloom condition (a 5xx, throttling: API Gateway's or a
    function's own failure to reach AWS). Every Skyloom request is idempotent, so any may be retried."""
    return isinstance(exc, ConnectionFailed) or type(exc) is SkyloomError


def sigv4_headers(
    credentials: Credentials,
    region: str,
    method: str,
    url: str,
    data: bytes | None,
    content_type: str | None = "application/json",
) -> dict[str, str]:
    """The headers that sign one request to the REST API with SigV4 (service ``execute-api``).

    Public so that every caller of the API signs exactly as the SDK does (the fuzz tests send
    schemathesis-generated requests through it): ``url`` must be the final URL, query string
    included, and ``data`` the exact body bytes, because both are part of the signature.
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    headers = {"Content-Type": content_type} if content_type is not None else {}
    req = AWSRequest(method=method, url=url, data=data or b"", headers=headers)
    # Frozen per request, so refreshable credentials (SSO, assumed roles) roll over mid-session.
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(req)
    return dict(req.headers.items())


class HttpTransport:
    """The real transport. One instance per client: it owns the connection pool.

    Example:
        >>> t = HttpTransport("http://127.0.0.1:8750", region="us-east-1", credentials=creds)
        >>> t.request("GET", "/sessions/abc")
    """

    def __init__(
        self,
        endpoint: str,
        *,
        region: str,
        credentials: Credentials,
        max_attempts: int = 6,
        backoff: float = 0.2,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        pool_size: int = 10,
    ):
        import urllib3

        self._endpoint = endpoint.rstrip("/")
        self._region = region
        self._credentials = credentials
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool: urllib3.PoolManager = urllib3.PoolManager(
            num_pools=4, maxsize=pool_size, block=False, retries=False
        )

    @property
    def endpoint(self) -> str:
        return self._endpoint

    # -- public ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        url = self._endpoint + path
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        status, raw = self._send(method, url, data, signed=True, read_timeout=timeout)
        if 200 <= status < 300:
            return json.loads(raw) if raw else None
        raise error_from_response(status, raw, f"{method} {path}")

    def put_url(self, url: str, data: bytes) -> None:
        status, raw = self._send("PUT", url, data, signed=False, read_timeout=None)
        if not 200 <= status < 300:
            raise error_from_response(status, raw, "PUT to presigned S3 URL")

    def get_url(self, url: str) -> bytes:
        status, raw = self._send("GET", url, None, signed=False, read_timeout=None)
        if not 200 <= status < 300:
            raise error_from_response(status, raw, "GET of presigned S3 URL")
        return raw

    def close(self) -> None:
        self._pool.clear()

    # -- steps -----------------------------------------------------------------------------------
    def _send(
        self, method: str, url: str, data: bytes | None, *, signed: bool, read_timeout: float | None
    ) -> tuple[int, bytes]:
        """Send with retries; returns the last (status, body) or raises ConnectionFailed."""
        import urllib3

        timeout = urllib3.Timeout(connect=self._connect_timeout, read=read_timeout or self._read_timeout)
        for attempt in range(self._max_attempts):
            last = attempt == self._max_attempts - 1
            headers = self._sign(method, url, data) if signed else {}
            try:
                resp = self._pool.request(
                    method, url, body=data, headers=headers, timeout=timeout, retries=False, redirect=False
                )
            except urllib3.exceptions.HTTPError as exc:
                if last:
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ConnectionFailed(
                        f"cannot reach Skyloom at {self._endpoint} after {self._max_attempts} attempts: "
                        f"{type(exc).__name__}: {reason[:200]}"
                    ) from exc
                time.sleep(self._delay(attempt, None))
                continue
            if resp.status in _RETRY_STATUS and not last:
                time.sleep(self._delay(attempt, resp.headers.get("Retry-After")))
                continue
            return resp.status, resp.data
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _sign(self, method: str, url: str, data: bytes | None) -> dict[str, str]:
        content_type = "application/json" if data is not None else None
        return sigv4_headers(self._credentials, self._region, method, url, data, content_type)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), 20.0)
            except ValueError:
                pass
        # Jittered, so a fleet of clients hit by the same outage does not retry in lockstep.
        cap = min(self._backoff * 2.0**attempt, 5.0)
        return cap / 2 + random.uniform(0, cap / 2)
