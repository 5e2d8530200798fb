"""Bugs the API fuzzer (``test_api_fuzz.py``) found, each pinned by the smallest request that showed
it, so they stay fixed in the fast suite too."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import pytest

from tests.functional.conftest import FakeLambdaContext
from tests.functional.test_limits import get
from tests.functional.test_submit_api import assert_error, nothing_written

if TYPE_CHECKING:
    from skyloom.core.config import Settings
    from tests.functional.conftest import ApiClient, ApiResponse, Db


def _send_bytes(api: ApiClient, method: str, path: str, raw: bytes) -> ApiResponse:
    """What the gateway does with a body that is not UTF-8: base64 it and set ``isBase64Encoded``."""
    from skyloom_server.functions.submit.handler import handler
    from tests.functional.conftest import ApiResponse

    event = api.event(method, path)
    event["body"] = base64.b64encode(raw).decode("ascii")
    event["isBase64Encoded"] = True
    out = handler(event, FakeLambdaContext())
    headers = {k.lower(): v for k, v in (out.get("headers") or {}).items()}
    for k, values in (out.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), values[0])
    return ApiResponse(status=int(out["statusCode"]), headers=headers, raw_body=out.get("body") or "")


@pytest.mark.parametrize("raw", [b"\xb7", b'{"name": "\xff"}', b"\xef\xbb"])
def test_a_body_that_is_not_utf8_is_a_400_not_a_500(api: ApiClient, db: Db, raw: bytes) -> None:
    # Found by the fuzzer on POST /sessions: Powertools decodes the base64 body to str and raised
    # UnicodeDecodeError, which the catch-all turned into 500 "internal".
    with nothing_written(db):
        body = assert_error(_send_bytes(api, "POST", "/sessions", raw), 400, "invalid_request", "body")
    assert "UTF-8" in body["message"]


def test_a_base64_body_that_is_utf8_json_still_works(api: ApiClient) -> None:
    r = _send_bytes(api, "POST", "/sessions", b'{"name": "caf\xc3\xa9"}')
    assert r.status == 201, r.raw_body
    assert r.json["name"] == "café"


def test_complete_uploads_refused_for_one_id_completes_none(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    # Found while triaging the fuzzer's 4xx-wrote-something check: ids were completed one by one,
    # so a good upload listed before a bad id was completed behind the 409.
    import boto3

    sid = api.session()
    r = api.call("POST", f"/sessions/{sid}/results", {"results": [{"id": "up", "upload": True}, {"id": "awaited"}]})
    assert r.status == 201, r.raw_body
    url = urlparse(r.json["results"][0]["upload_url"])
    path = unquote(url.path).lstrip("/")
    key = path if url.hostname and url.hostname.startswith(aws_stack.bucket) else path.split("/", 1)[1]
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=aws_stack.bucket, Key=key, Body=b"data")
    with nothing_written(db):
        assert_error(api.call("POST", f"/sessions/{sid}/results/complete", {"ids": ["up", "awaited"]}),
                     409, "conflict", "ids.1")
    done = api.call("POST", f"/sessions/{sid}/results/complete", {"ids": ["up"]})
    assert done.status == 200 and done.json["results"][0]["status"] == "Completed", done.raw_body


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


@pytest.mark.parametrize(
    "raw", ['[1' + '0' * 400 + ',"task","x"]', '[NaN,"task","x"]', '[Infinity,"task","x"]', '[1e400,"task","x"]']
)
def test_a_forged_events_cursor_is_a_400(api: ApiClient, db: Db, raw: str) -> None:
    # Found while widening the fuzzer's reach to well-formed-but-hostile cursors: an integer too large
    # for a float raised OverflowError (500), and NaN/Infinity were accepted and echoed back.
    sid = api.session()
    with nothing_written(db):
        assert_error(get(api, f"/sessions/{sid}/events", {"after": _cursor(raw)}), 400, "invalid_request", "after")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("name", ["created_after", "created_before"])
@pytest.mark.parametrize("path", ["/sessions", "/sessions/{sid}/tasks", "/sessions/{sid}/results"])
def test_non_finite_time_filters_are_a_400(api: ApiClient, db: Db, path: str, name: str, value: str) -> None:
    # GET /sessions?created_after=nan put NaN into a DynamoDB key condition: 500.
    sid = api.session()
    with nothing_written(db):
        assert_error(get(api, path.format(sid=sid), {name: value}), 400, "invalid_request", name)
    assert get(api, path.format(sid=sid), {name: "1.5"}).status == 200
