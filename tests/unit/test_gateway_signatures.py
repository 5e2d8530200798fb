"""The local gateway verifies SigV4 as API Gateway's IAM authorization does.

Requests are signed with botocore exactly as the SDK signs them; the function behind the gateway is
a recorder, so "nothing written" means it was never invoked. Bad signatures, unknown keys, dates
outside the five-minute skew and tampered requests must all be 403 with API Gateway's body and
``x-amzn-ErrorType``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from skyloom.local.credentials import (
    IDENTITIES_ENV,
    IDENTITIES_FILE,
    LOCAL_ACCESS_KEY_ID,
    LOCAL_SECRET_ACCESS_KEY,
    LocalCredentialStore,
    local_user_arn,
    mint_identity,
)
from skyloom.local.gateway import BAD_SIGNATURE_MESSAGE, UNKNOWN_KEY_MESSAGE, Gateway, HttpResponse

HOST = "127.0.0.1:8750"
BODY = b'{"name": "portfolio"}'


class Recorder:
    """Stands in for the submit function: records every event it is invoked with."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 200, "body": json.dumps({"caller": event["requestContext"]["identity"]["userArn"]})}


def signed(
    method: str = "POST",
    path: str = "/sessions",
    body: bytes = BODY,
    key: str = LOCAL_ACCESS_KEY_ID,
    secret: str = LOCAL_SECRET_ACCESS_KEY,
    extra: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The headers the SDK sends (``HttpTransport._sign``), plus Host as urllib3 adds it."""
    req = AWSRequest(method=method, url=f"http://{HOST}{path}", data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, secret), "execute-api", "us-east-1").add_auth(req)
    return [("Host", HOST), *req.headers.items(), *(extra or {}).items()]


def make(tmp_path: Path, clock_offset: float = 0.0) -> tuple[Gateway, Recorder]:
    recorder = Recorder()
    store = LocalCredentialStore(tmp_path / IDENTITIES_FILE, environ={})
    gateway = Gateway(recorder, region="us-east-1", credentials=store, clock=lambda: time.time() + clock_offset)
    return gateway, recorder


def call(gateway: Gateway, headers: list[tuple[str, str]], method: str = "POST", target: str = "/sessions",
         body: bytes = BODY) -> HttpResponse:
    return gateway.handle(method, target, headers, body, "127.0.0.1")


def assert_refused(response: HttpResponse, recorder: Recorder, error_type: str, message: str) -> None:
    assert response.status == 403
    assert dict(response.headers)["x-amzn-ErrorType"] == error_type
    assert message in json.loads(response.body)["message"]
    assert recorder.events == [], "a refused request must never reach the function"


def test_a_correctly_signed_request_reaches_the_function_as_its_principal(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    response = call(gateway, signed())
    assert response.status == 200
    [event] = recorder.events
    assert event["requestContext"]["identity"]["userArn"] == local_user_arn(LOCAL_ACCESS_KEY_ID)
    assert event["requestContext"]["identity"]["accessKey"] == LOCAL_ACCESS_KEY_ID


def test_a_signature_made_with_the_wrong_secret_is_refused(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    response = call(gateway, signed(secret="not-the-secret"))
    assert_refused(response, recorder, "InvalidSignatureException", BAD_SIGNATURE_MESSAGE)


def test_an_unknown_access_key_is_refused(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    response = call(gateway, signed(key="mallory", secret="anything"))
    assert_refused(response, recorder, "UnrecognizedClientException", UNKNOWN_KEY_MESSAGE)


def test_an_unsigned_request_is_refused(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    response = call(gateway, [("Host", HOST), ("Content-Type", "application/json")])
    assert_refused(response, recorder, "MissingAuthenticationTokenException", "Missing Authentication Token")


@pytest.mark.parametrize(
    ("offset", "message"),
    [(301.0, "Signature expired"), (-301.0, "Signature not yet current")],
    ids=["stale", "from-the-future"],
)
def test_a_date_outside_the_five_minute_skew_is_refused(tmp_path: Path, offset: float, message: str) -> None:
    gateway, recorder = make(tmp_path, clock_offset=offset)
    response = call(gateway, signed())
    assert_refused(response, recorder, "InvalidSignatureException", message)


def test_a_date_within_the_skew_is_accepted(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path, clock_offset=240.0)
    assert call(gateway, signed()).status == 200
    assert len(recorder.events) == 1


def test_a_tampered_body_is_refused(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    response = call(gateway, signed(), body=b'{"name": "someone-else"}')
    assert_refused(response, recorder, "InvalidSignatureException", BAD_SIGNATURE_MESSAGE)


def test_a_tampered_body_with_the_original_content_hash_header_is_refused(tmp_path: Path) -> None:
    """X-Amz-Content-SHA256 is a claim, not a proof: the payload hash is always computed."""
    import hashlib

    gateway, recorder = make(tmp_path)
    headers = signed(extra={"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
    response = call(gateway, headers, body=b'{"name": "someone-else"}')
    assert_refused(response, recorder, "InvalidSignatureException", BAD_SIGNATURE_MESSAGE)


@pytest.mark.parametrize(
    ("method", "target"),
    [("POST", "/sessions/other"), ("POST", "/sessions?x=1"), ("PUT", "/sessions")],
    ids=["path", "query", "method"],
)
def test_a_request_changed_after_signing_is_refused(tmp_path: Path, method: str, target: str) -> None:
    gateway, recorder = make(tmp_path)
    response = call(gateway, signed(), method=method, target=target)
    assert_refused(response, recorder, "InvalidSignatureException", BAD_SIGNATURE_MESSAGE)


def test_a_changed_signed_header_is_refused(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    headers = [(k, "text/plain" if k == "Content-Type" else v) for k, v in signed()]
    response = call(gateway, headers)
    assert_refused(response, recorder, "InvalidSignatureException", BAD_SIGNATURE_MESSAGE)


def _presigned(path: str, expires: int = 60) -> str:
    req = AWSRequest(method="GET", url=f"http://{HOST}{path}")
    SigV4QueryAuth(Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY), "execute-api", "us-east-1",
                   expires=expires).add_auth(req)
    return str(req.url).removeprefix(f"http://{HOST}")


def test_query_string_signatures_are_verified_too(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    target = _presigned("/sessions?limit=5")
    assert call(gateway, [("Host", HOST)], method="GET", target=target, body=b"").status == 200
    tampered = target.replace("limit=5", "limit=6")
    response = call(gateway, [("Host", HOST)], method="GET", target=tampered, body=b"")
    assert response.status == 403 and len(recorder.events) == 1
    expired, expired_recorder = make(tmp_path, clock_offset=61.0)
    response = call(expired, [("Host", HOST)], method="GET", target=target, body=b"")
    assert_refused(response, expired_recorder, "InvalidSignatureException", "Signature expired")


def test_a_minted_identity_signs_at_once_and_is_its_own_principal(tmp_path: Path) -> None:
    gateway, recorder = make(tmp_path)
    assert call(gateway, signed(key="bob", secret="guess")).status == 403
    key, secret = mint_identity(tmp_path, "bob")
    assert mint_identity(tmp_path, "bob") == (key, secret), "minting is idempotent"
    assert (tmp_path / IDENTITIES_FILE).stat().st_mode & 0o077 == 0, "secrets are readable by their owner only"
    assert call(gateway, signed(key=key, secret="guess")).status == 403
    assert call(gateway, signed(key=key, secret=secret)).status == 200
    assert recorder.events[-1]["requestContext"]["identity"]["userArn"] == local_user_arn("bob")


def test_identities_from_the_environment_and_bad_names(tmp_path: Path) -> None:
    store = LocalCredentialStore(None, environ={IDENTITIES_ENV: "carol:s3cret, dave:other"})
    assert store.secret_for("carol") == "s3cret" and store.secret_for("dave") == "other"
    assert store.secret_for(LOCAL_ACCESS_KEY_ID) == LOCAL_SECRET_ACCESS_KEY
    with pytest.raises(ValueError, match=IDENTITIES_ENV):
        LocalCredentialStore(None, environ={IDENTITIES_ENV: "no-secret"})
    with pytest.raises(ValueError, match="default local identity"):
        mint_identity(tmp_path, LOCAL_ACCESS_KEY_ID)
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        mint_identity(tmp_path, "a/b")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Gateway, Recorder]]:
    gateway, recorder = make(tmp_path)
    gateway.start()
    try:
        yield gateway, recorder
    finally:
        gateway.stop()


def test_over_real_http_the_sdk_signature_verifies_and_a_forged_one_does_not(served: tuple[Gateway, Recorder]) -> None:
    from skyloom.client.http import HttpTransport
    from skyloom.errors import Unauthorized

    gateway, recorder = served
    good = HttpTransport(gateway.url, region="eu-west-3",
                         credentials=Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
    assert good.request("POST", "/sessions", {"name": "x"})["caller"] == local_user_arn(LOCAL_ACCESS_KEY_ID)
    forged = HttpTransport(gateway.url, region="us-east-1", credentials=Credentials(LOCAL_ACCESS_KEY_ID, "wrong"),
                           max_attempts=1)
    with pytest.raises(Unauthorized, match="signature we calculated does not match"):
        forged.request("POST", "/sessions", {"name": "x"})
    raw = urllib3.PoolManager().request("GET", f"{gateway.url}/sessions")
    assert raw.status == 403 and raw.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert len(recorder.events) == 1
