"""A loopback stand-in for API Gateway (REST API, Lambda proxy integration, IAM authorization).

Each HTTP request becomes the proxy event API Gateway would send to ``functions/submit`` for a
``/{proxy+}`` resource, and the handler's proxy response becomes the HTTP response, so the function
runs the same code path locally as on AWS.

Identity works as with IAM authorization: the caller is whoever signed the request with SigV4 for
the ``execute-api`` service. The access key id becomes ``identity.accessKey`` and the principal
``arn:aws:iam::000000000000:user/<key id>`` becomes ``identity.userArn`` and ``identity.caller``; an
unsigned request is refused with 403 "Missing Authentication Token" before the function runs.
**The signature itself is not verified yet** (a later issue): locally, anyone who can reach the
loopback port may claim any key id, which is acceptable only because the port is loopback-only.

Handler calls are serialized by default (``concurrency=1``): Powertools' ``APIGatewayRestResolver``
keeps the current event in class attributes (``BaseRouter.current_event``), so two requests resolved
at once in one interpreter could read each other's event, identity included. The local stack
therefore hands the real submit function a :class:`~skyloom.local.containers.ContainerPool` (one
process per concurrent request, as on AWS) and raises the concurrency to the pool's size.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from skyloom.local.credentials import LOCAL_ACCOUNT_ID, local_user_arn
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


def caller_of(headers: Mapping[str, str], query: Mapping[str, str]) -> Caller:
    """Read the SigV4 credential scope of a request (``Authorization`` header or presigned query).

    Raises:
        AuthenticationError: unsigned, malformed, or scoped to another service.
    """
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if authorization is not None:
        match = _SIGV4_HEADER.match(authorization.strip())
        if match is None or "Signature=" not in authorization or "SignedHeaders=" not in authorization:
            raise AuthenticationError(
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
                "of an AWS4-HMAC-SHA256 signature."
            )
        key, scope_region, service = match["key"], match["region"], match["service"]
    elif query.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256" and "X-Amz-Credential" in query:
        parts = query["X-Amz-Credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or "X-Amz-Signature" not in query:
            raise AuthenticationError("X-Amz-Credential and X-Amz-Signature must form an AWS4-HMAC-SHA256 scope.")
        key, scope_region, service = parts[0], parts[2], parts[3]
    else:
        raise AuthenticationError("Missing Authentication Token", "MissingAuthenticationTokenException")
    if service != "execute-api":
        raise AuthenticationError(f"Credential should be scoped to correct service: 'execute-api'. (got {service!r})")
    # The scope's region is not checked: a local stack has no real region, and a client whose
    # AWS_REGION differs from the stack's would otherwise be refused for a label.
    return Caller(access_key_id=key, region=scope_region, service=service)


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
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._handler = handler
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
        query = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
        try:
            caller = caller_of(header_map, query)
        except AuthenticationError as exc:
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
