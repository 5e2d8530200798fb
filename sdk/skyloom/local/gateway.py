"""A loopback stand-in for API Gateway (REST API, Lambda proxy integration, IAM authorization).

Each HTTP request becomes the proxy event API Gateway would send to ``functions/submit`` for a
``/{proxy+}`` resource, and the handler's proxy response becomes the HTTP response, so the function
runs the same code path locally as on AWS.

Identity works as with IAM authorization: the caller is whoever signed the request with SigV4 for
the ``execute-api`` service, and the signature is verified before the function runs. The gateway
looks the access key id up in a :class:`~skyloom.local.credentials.LocalCredentialStore`, recomputes
the signature with botocore's own SigV4 canonicalization (:class:`_Verifier`) and answers 403 with
API Gateway's body and ``x-amzn-ErrorType`` when the request is unsigned, the key unknown, the
signature different (a tampered body, path, query or signed header changes it) or ``X-Amz-Date``
more than five minutes away from the gateway's clock. Then the access key id becomes
``identity.accessKey`` and the principal ``arn:aws:iam::000000000000:user/<key id>`` becomes
``identity.userArn`` and ``identity.caller``. Both the ``Authorization`` header and query-string
(presigned) signatures are accepted, as API Gateway does.

Handler calls are serialized by default (``concurrency=1``): Powertools' ``APIGatewayRestResolver``
keeps the current event in class attributes (``BaseRouter.current_event``), so two requests resolved
at once in one interpreter could read each other's event, identity included. The local stack
therefore hands the real submit function a :class:`~skyloom.local.containers.ContainerPool` (one
process per concurrent request, as on AWS) and raises the concurrency to the pool's size.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from skyloom.local import faults
from skyloom.local.credentials import LOCAL_ACCOUNT_ID, LocalCredentialStore, local_user_arn
from skyloom.local.invoke import Handler, LambdaContext

logger = logging.getLogger(__name__)

#: Lambda refuses invocation payloads (and responses) above 6 MB; API Gateway then answers 413/502.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
#: API Gateway's integration timeout, reported to the function as its deadline.
INTEGRATION_TIMEOUT_SECONDS = 29.0

_SIGV4_HEADER = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)"
    r"/(?P<service>[^/,\s]+)/aws4_request\s*,"
)
_SIGNED_HEADERS = re.compile(r"SignedHeaders=(?P<names>[^,\s]+)")
_SIGNATURE = re.compile(r"Signature=(?P<sig>[0-9a-fA-F]+)")
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
#: API Gateway accepts a signature whose X-Amz-Date is at most this far from its clock, either way.
MAX_CLOCK_SKEW_SECONDS = 300
#: Longest validity of a query-string signature (SigV4's own limit: 7 days).
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
#: API Gateway's answers to a signature it cannot accept, verbatim.
BAD_SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY_MESSAGE = "The security token included in the request is invalid."
_HOP_BY_HOP = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive"})


@dataclass(frozen=True)
class Caller:
    """Who signed a request."""

    access_key_id: str
    region: str
    service: str

    @property
    def arn(self) -> str:
        return local_user_arn(self.access_key_id)


class AuthenticationError(Exception):
    """The request is not signed in a way API Gateway would accept; the message is API Gateway's."""

    def __init__(self, message: str, error_type: str = "IncompleteSignatureException") -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class _Signed:
    """What a request claims about its signature, before it is checked."""

    caller: Caller
    amz_date: str
    signed_headers: tuple[str, ...]
    signature: str
    #: The request target with ``X-Amz-Signature`` removed (query signatures), else the target.
    target: str
    #: Seconds a query signature stays valid (``X-Amz-Expires``); None for header signatures.
    expires: int | None


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def caller_of(headers: Mapping[str, str], query: Mapping[str, str]) -> Caller:
    """Read the SigV4 credential scope of a request (``Authorization`` header or presigned query).

    Only the claim: :meth:`Gateway.handle` verifies it with :func:`authenticate` before trusting it.

    Raises:
        AuthenticationError: unsigned, malformed, or scoped to another service.
    """
    return _parse_signed(list(headers.items()), query, "/").caller


def _parse_signed(headers: list[tuple[str, str]], query: Mapping[str, str], target: str) -> _Signed:
    authorization = _header(headers, "authorization")
    expires: int | None = None
    if authorization is not None:
        match = _SIGV4_HEADER.match(authorization.strip())
        names = _SIGNED_HEADERS.search(authorization)
        sig = _SIGNATURE.search(authorization)
        if match is None or names is None or sig is None:
            raise AuthenticationError(
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
                "of an AWS4-HMAC-SHA256 signature."
            )
        key, scope_region, service = match["key"], match["region"], match["service"]
        amz_date = _header(headers, "x-amz-date")
        if amz_date is None:
            raise AuthenticationError(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            )
        signed, signature = names["names"], sig["sig"]
    elif query.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256" and "X-Amz-Credential" in query:
        parts = query["X-Amz-Credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or "X-Amz-Signature" not in query:
            raise AuthenticationError("X-Amz-Credential and X-Amz-Signature must form an AWS4-HMAC-SHA256 scope.")
        key, scope_region, service = parts[0], parts[2], parts[3]
        amz_date, signed = query.get("X-Amz-Date", ""), query.get("X-Amz-SignedHeaders", "")
        signature = query["X-Amz-Signature"]
        try:
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            raise AuthenticationError("X-Amz-Expires must be a number of seconds.") from None
        if not 0 < expires <= MAX_PRESIGN_EXPIRES:
            raise AuthenticationError(f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES} seconds.")
        path, _, raw_query = target.partition("?")
        # Strip the signature from the raw query (not a re-encoded one): the canonical query string
        # is computed from the encoding the client signed.
        kept = [p for p in raw_query.split("&") if p.partition("=")[0] != "X-Amz-Signature"]
        target = f"{path}?{'&'.join(kept)}" if kept else path
    else:
        raise AuthenticationError("Missing Authentication Token", "MissingAuthenticationTokenException")
    if service != "execute-api":
        raise AuthenticationError(f"Credential should be scoped to correct service: 'execute-api'. (got {service!r})")
    if not _AMZ_DATE.match(amz_date):
        raise AuthenticationError(
            f"X-Amz-Date must be in the ISO8601 basic format yyyyMMdd'T'HHmmss'Z' (got {amz_date!r})."
        )
    # The scope's region is not checked: a local stack has no real region, and a client whose
    # AWS_REGION differs from the stack's would otherwise be refused for a label. It is part of the
    # signed string, though, so it cannot be changed after signing.
    return _Signed(
        caller=Caller(access_key_id=key, region=scope_region, service=service),
        amz_date=amz_date,
        signed_headers=tuple(n for n in signed.lower().split(";") if n),
        signature=signature.lower(),
        target=target,
        expires=expires,
    )


class _Verifier(SigV4Auth):
    """botocore's SigV4 signer, told which headers the client signed.

    botocore picks the headers to sign itself (all but a blocklist); a verifier must use exactly the
    ``SignedHeaders`` the client listed, with the values received, so that is the one override.
    Everything else (path normalization, canonical query string, payload hash, key derivation) is
    botocore's, so the gateway and the SDK cannot disagree on canonicalization.
    """

    def __init__(self, credentials: Credentials, region: str, headers: HTTPHeaders) -> None:
        super().__init__(credentials, "execute-api", region)
        self._received = headers

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._received


def _epoch(amz_date: str) -> int:
    return calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))


def _stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def authenticate(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: LocalCredentialStore,
    now: float,
) -> Caller:
    """Verify a request's SigV4 signature as API Gateway does; returns the caller it proves.

    Raises:
        AuthenticationError: unsigned or malformed (``IncompleteSignatureException``,
            ``MissingAuthenticationTokenException``), unknown key (``UnrecognizedClientException``),
            a different signature, or a date outside the allowed skew (``InvalidSignatureException``).
    """
    query = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
    claim = _parse_signed(headers, query, target)
    secret = credentials.secret_for(claim.caller.access_key_id)
    if secret is None:
        raise AuthenticationError(UNKNOWN_KEY_MESSAGE, "UnrecognizedClientException")
    signed_at = _epoch(claim.amz_date)
    if claim.expires is not None:  # a query signature: valid from its date until date + expires
        if now > signed_at + claim.expires:
            raise AuthenticationError(
                f"Signature expired: {claim.amz_date} is now earlier than {_stamp(now - claim.expires)} "
                f"({_stamp(now)} - {claim.expires} sec.)",
                "InvalidSignatureException",
            )
    elif signed_at < now - MAX_CLOCK_SKEW_SECONDS:
        raise AuthenticationError(
            f"Signature expired: {claim.amz_date} is now earlier than {_stamp(now - MAX_CLOCK_SKEW_SECONDS)} "
            f"({_stamp(now)} - 5 min.)",
            "InvalidSignatureException",
        )
    if signed_at > now + MAX_CLOCK_SKEW_SECONDS:
        raise AuthenticationError(
            f"Signature not yet current: {claim.amz_date} is still later than "
            f"{_stamp(now + MAX_CLOCK_SKEW_SECONDS)} ({_stamp(now)} + 5 min.)",
            "InvalidSignatureException",
        )
    received = HTTPHeaders()
    for name, value in headers:
        if name.lower() in claim.signed_headers:
            received.add_header(name.lower(), value)
    if "host" not in claim.signed_headers or any(n not in received for n in claim.signed_headers):
        raise AuthenticationError(BAD_SIGNATURE_MESSAGE, "InvalidSignatureException")
    host = received["host"]
    # No headers on the rebuilt request: the payload hash is always computed from the body received,
    # never taken from a client-supplied X-Amz-Content-SHA256 that a tampered body would keep.
    request = AWSRequest(method=method, url=f"http://{host}{claim.target}", data=body)
    request.context["timestamp"] = claim.amz_date
    verifier = _Verifier(Credentials(claim.caller.access_key_id, secret), claim.caller.region, received)
    canonical = verifier.canonical_request(request)
    expected = verifier.signature(verifier.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, claim.signature):
        raise AuthenticationError(BAD_SIGNATURE_MESSAGE, "InvalidSignatureException")
    return claim.caller


def _last_values(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """API Gateway's two views of repeated names: the last value, and all values in order."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return (single or None, multi or None)


def _decode_body(raw: bytes) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


def build_event(
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    caller: Caller,
    source_ip: str,
    stage: str,
    host: str,
) -> dict[str, Any]:
    """The REST API (v1) proxy event of one request on a ``/{proxy+}`` resource."""
    parts = urlsplit(target)
    path = unquote(parts.path) or "/"
    header_map, multi_headers = _last_values(headers)
    query, multi_query = _last_values(parse_qsl(parts.query, keep_blank_values=True))
    text, is_base64 = _decode_body(body)
    resource = "/" if path == "/" else "/{proxy+}"
    path_parameters = None if path == "/" else {"proxy": path.lstrip("/")}
    now = time.time()
    request_id = str(uuid.uuid4())
    user_agent = (header_map or {}).get("User-Agent") or (header_map or {}).get("user-agent")
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": header_map,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{stage}{path}",
            "accountId": LOCAL_ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "local",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": LOCAL_ACCOUNT_ID,
                "cognitoIdentityId": None,
                "caller": caller.arn,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": caller.access_key_id,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": caller.arn,
                "userAgent": user_agent,
                "user": caller.access_key_id,
            },
            "domainName": host,
            "apiId": "local",
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _error(status: int, message: str, error_type: str, request_id: str) -> HttpResponse:
    body = json.dumps({"message": message}).encode()
    return HttpResponse(
        status,
        [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", error_type),
        ],
        body,
    )


def render_response(response: Any, request_id: str) -> HttpResponse:
    """Turn a Lambda proxy response into HTTP, or into API Gateway's 502 when it is malformed."""
    if not isinstance(response, Mapping) or not isinstance(response.get("statusCode"), int):
        logger.error("submit handler returned a malformed proxy response: %.200r", response)
        return _error(502, "Internal server error", "InternalServerErrorException", request_id)
    raw_body = response.get("body")
    body_text = "" if raw_body is None else str(raw_body)
    if response.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body_text, validate=True)
        except binascii.Error:
            logger.error("submit handler returned isBase64Encoded with a body that is not base64")
            return _error(502, "Internal server error", "InternalServerErrorException", request_id)
    else:
        body = body_text.encode("utf-8")
    if len(body) > MAX_PAYLOAD_BYTES:
        logger.error("submit handler response of %d bytes exceeds Lambda's 6 MB limit", len(body))
        return _error(502, "Internal server error", "InternalServerErrorException", request_id)
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, values in (response.get("multiValueHeaders") or {}).items():
        seen.add(name.lower())
        headers.extend((name, str(v)) for v in values)
    for name, value in (response.get("headers") or {}).items():
        if name.lower() not in seen:
            headers.append((name, str(value)))
    headers = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    headers.append(("x-amzn-RequestId", request_id))
    return HttpResponse(response["statusCode"], headers, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many SDK connections at once: a larger backlog than socketserver's 5.
    request_queue_size = 128
    gateway: Gateway


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as API Gateway offers
    # The head and the body of an answer leave in two writes: with Nagle's algorithm the body waits
    # for the client's (delayed) acknowledgement of the head, 40 ms on Linux, on every request.
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self) -> None:
        gateway = self.server.gateway
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
        except _TooLarge:
            self._send(_error(413, "Request Too Long", "RequestTooLongException", request_id))
            self.close_connection = True
            return
        if body is None:
            self._send(_error(400, "Bad request body", "BadRequestException", request_id))
            self.close_connection = True
            return
        fault = faults.api_gateway_fault()  # local mode's fault injection (off unless configured)
        if fault is not None:
            if fault.status == 0:  # this process is cut off the network: no answer at all
                self.close_connection = True
                return
            self._send(_error(fault.status, fault.message, fault.error_type, request_id))
            return
        self._send(gateway.handle(self.command, self.path, list(self.headers.items()), body, self.client_address[0]))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_PAYLOAD_BYTES:
                    raise _TooLarge
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            return None
        if length > MAX_PAYLOAD_BYTES:
            raise _TooLarge
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("gateway %s - " + format, self.client_address[0], *args)


class _TooLarge(Exception):
    pass


class Gateway:
    """Serve ``handler`` as a Lambda proxy integration on ``http://127.0.0.1:PORT``.

    Args:
        handler: The submit function's ``handler(event, context)``.
        region: Region of the function's ARN.
        function_name: Name in the Lambda context.
        port: 0 picks a free port.
        stage: The stage name in ``requestContext``.
        concurrency: Handler calls running at once (see the module docstring before raising it).
        credentials: The secrets signatures are verified with; by default the local key and
            ``SKYLOOM_LOCAL_IDENTITIES``.
        clock: The time signatures are checked against (tests move it to test the skew).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        region: str,
        function_name: str = "skyloom-submit",
        port: int = 0,
        stage: str = "local",
        concurrency: int = 1,
        credentials: LocalCredentialStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._handler = handler
        self._credentials = credentials if credentials is not None else LocalCredentialStore()
        self._clock = clock
        self._region = region
        self._function_name = function_name
        self._port = port
        self._stage = stage
        self._slots = threading.BoundedSemaphore(concurrency)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        server = _Server(("127.0.0.1", self._port), _RequestHandler)
        server.gateway = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="skyloom-gateway", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> HttpResponse:
        """One request, start to end: authenticate, build the event, invoke, render."""
        request_id = str(uuid.uuid4())
        header_map = dict(headers)
        try:
            caller = authenticate(method, target, headers, body, self._credentials, self._clock())
        except AuthenticationError as exc:
            logger.info("gateway refused %s %s: %s", method, urlsplit(target).path, exc.error_type)
            return _error(403, str(exc), exc.error_type, request_id)
        host = header_map.get("Host") or header_map.get("host") or "127.0.0.1"
        event = build_event(
            method=method,
            target=target,
            headers=headers,
            body=body,
            caller=caller,
            source_ip=source_ip,
            stage=self._stage,
            host=host,
        )
        context = LambdaContext(
            function_name=self._function_name,
            region=self._region,
            timeout_seconds=INTEGRATION_TIMEOUT_SECONDS,
            aws_request_id=event["requestContext"]["requestId"],
        )
        with self._slots:
            try:
                response = self._handler(event, context)
            except Exception:
                logger.exception("submit handler raised on %s %s", method, event["path"])
                return _error(502, "Internal server error", "InternalServerErrorException", request_id)
        return render_response(response, event["requestContext"]["requestId"])
