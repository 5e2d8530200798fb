"""The HTTP transport against a real loopback server: signing, retries, errors, pooling."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.credentials import Credentials

import skyloom
from skyloom.client.connection import _is_loopback, _region
from skyloom.client.http import HttpTransport


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        #: (status, body, headers) answered in order; the last one repeats.
        self.script: list[tuple[int, bytes, dict[str, str]]] = [(200, b"{}", {})]


def _handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so pooling is observable

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rec.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                    "peer": self.client_address,
                }
            )
            status, data, headers = rec.script.pop(0) if len(rec.script) > 1 else rec.script[0]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def served() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/prod", rec
    httpd.shutdown()
    httpd.server_close()


def _transport(endpoint: str, **kw: Any) -> HttpTransport:
    creds = Credentials("AKIDEXAMPLE", "secret", kw.pop("token", None))
    return HttpTransport(endpoint, region="eu-west-3", credentials=creds, backoff=0.001, **kw)


def test_requests_are_signed_json(served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    rec.script = [(201, b'{"session_id": "s1"}', {})]
    t = _transport(endpoint, token="tok")
    assert t.request("POST", "/sessions", {"name": "x"}) == {"session_id": "s1"}
    (req,) = rec.requests
    assert req["path"] == "/prod/sessions" and json.loads(req["body"]) == {"name": "x"}
    auth = req["headers"]["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-3/execute-api/aws4_request" in auth and "host" in auth
    assert req["headers"]["X-Amz-Security-Token"] == "tok"
    assert req["headers"]["Content-Type"] == "application/json"


def test_connections_are_kept_alive(served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    t = _transport(endpoint)
    for _ in range(5):
        t.request("GET", "/sessions/s1")
    assert len({r["peer"] for r in rec.requests}) == 1


def test_5xx_and_429_are_retried(served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    rec.script = [(503, b"", {}), (429, b"", {"Retry-After": "0"}), (200, b'{"ok": true}', {})]
    assert _transport(endpoint).request("POST", "/sessions/s/tasks", {"tasks": []}) == {"ok": True}
    assert len(rec.requests) == 3
    assert rec.requests[0]["body"] == rec.requests[2]["body"]  # the same idempotent body


def test_persistent_5xx_raises_the_mapped_error(served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    rec.script = [(500, b'{"error": "internal", "message": "db down"}', {})]
    with pytest.raises(skyloom.SkyloomError, match="db down"):
        _transport(endpoint, max_attempts=3).request("GET", "/sessions/s")
    assert len(rec.requests) == 3


def test_client_errors_are_not_retried_and_keep_their_field(served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    rec.script = [(404, b'{"error": "session_not_found", "message": "no such session", "field": "session_id"}', {})]
    with pytest.raises(skyloom.SessionNotFound) as info:
        _transport(endpoint).request("GET", "/sessions/nope")
    assert info.value.field == "session_id" and len(rec.requests) == 1


def test_unreachable_endpoint_is_one_line_naming_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(skyloom.ConnectionFailed) as info:
        _transport(endpoint, max_attempts=2).request("GET", "/sessions/x")
    assert endpoint in str(info.value) and "\n" not in str(info.value)


def test_presigned_urls_are_not_signed(served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    rec.script = [(200, b"", {}), (200, b"blob-bytes", {})]
    t = _transport(endpoint)
    url = endpoint.replace("/prod", "/bucket/key?X-Amz-Signature=abc")
    t.put_url(url, b"blob-bytes")
    assert t.get_url(url) == b"blob-bytes"
    assert rec.requests[0]["body"] == b"blob-bytes"
    assert all("Authorization" not in r["headers"] for r in rec.requests)


def test_presigned_failure_is_an_error(served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    rec.script = [(403, b"<Error><Code>AccessDenied</Code></Error>", {})]
    with pytest.raises(skyloom.Unauthorized, match="AccessDenied"):
        _transport(endpoint).get_url(endpoint + "/x")


def test_connect_helpers() -> None:
    assert _region("https://abc.execute-api.ap-south-1.amazonaws.com/prod") == "ap-south-1"
    assert _is_loopback("http://127.0.0.1:9000") and _is_loopback("http://localhost")
    assert not _is_loopback("https://example.com")


def test_connect_uses_the_environment_endpoint(monkeypatch: pytest.MonkeyPatch, served: tuple[str, Recorder]) -> None:
    endpoint, rec = served
    monkeypatch.setenv("SKYLOOM_ENDPOINT", endpoint)
    rec.script = [(200, b"{}", {})]
    with skyloom.connect() as client:
        assert client.endpoint == endpoint
        client._t.request("GET", "/ping")
    assert "Credential=skyloom-local/" in rec.requests[0]["headers"]["Authorization"]


def test_connect_without_endpoint_or_local_extra_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYLOOM_ENDPOINT", raising=False)
    # As if moto were not installed: the local package and its modules cannot be imported.
    for name in [n for n in sys.modules if n == "skyloom.local" or n.startswith("skyloom.local.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(skyloom.ConnectionFailed, match=r"SKYLOOM_ENDPOINT.*skyloom\[local\]"):
        skyloom.connect()


def test_connect_refuses_odd_credentials(served: tuple[str, Recorder]) -> None:
    endpoint, _ = served
    with pytest.raises(TypeError, match="access_key, secret_key"):
        skyloom.connect(endpoint, credentials="key:secret")
