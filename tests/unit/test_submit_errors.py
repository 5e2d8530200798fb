"""Pure parts of the submit API's error mapping and identity: names of fields, principals, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skyloom.errors import ERRORS_BY_CODE, InvalidRequest, PayloadTooLarge
from skyloom_server.functions.submit.errors import MAX_LISTED_ERRORS, field_of, validation_error
from skyloom_server.functions.submit.identity import principal_of
from skyloom_server.functions.submit.routes import MAX_BODY_BYTES, parse_json_body


@pytest.mark.parametrize(
    ("loc", "error_type", "expected"),
    [
        (("body", "tasks", 0, "handler"), "string_too_short", "tasks.0.handler"),
        (("body", "tasks", 3, "options", "partition"), "string_pattern_mismatch", "tasks.3.options.partition"),
        (("path", "session_id"), "string_pattern_mismatch", "session_id"),
        (("query", "limit"), "int_parsing", "limit"),
        (("body",), "missing", "body"),
        (("body",), "model_type", "body"),
        (("body", 17), "json_invalid", "body"),
        ((), "missing", "body"),
    ],
)
def test_field_of(loc: tuple[Any, ...], error_type: str, expected: str) -> None:
    assert field_of(loc, error_type) == expected


def test_validation_error_names_the_first_field_and_counts_the_rest() -> None:
    errors = [
        {"loc": ("body", "tasks", 0, "expected_outputs"), "type": "too_short",
         "msg": "List should have at least 1 item", "input": ["x" * 10_000], "ctx": {"error": ValueError("internal")}},
        {"loc": ("body", "tasks", 1, "handler"), "type": "missing", "msg": "Field required", "input": {}},
    ]
    exc = validation_error(errors)
    assert isinstance(exc, InvalidRequest)
    body = exc.to_json()
    assert body["error"] == "invalid_request"
    assert body["field"] == "tasks.0.expected_outputs"
    assert body["message"] == "tasks.0.expected_outputs: List should have at least 1 item (and 1 more error)"
    assert body["details"]["errors"][1] == {"field": "tasks.1.handler", "type": "missing", "message": "Field required"}
    json.dumps(body)  # neither the input echo nor the ctx exception leaks into the answer
    assert "xxxxxxxx" not in json.dumps(body)


def test_validation_error_lists_a_bounded_number() -> None:
    errors = [{"loc": ("body", "ids", i), "type": "string_pattern_mismatch", "msg": "bad"} for i in range(500)]
    body = validation_error(errors).to_json()
    assert len(body["details"]["errors"]) == MAX_LISTED_ERRORS
    assert body["details"]["truncated"] == 500 - MAX_LISTED_ERRORS


def test_broken_json_and_missing_body_messages() -> None:
    assert validation_error([{"loc": ("body", 3), "type": "json_invalid", "msg": "JSON decode error"}]).to_json() == {
        "error": "invalid_request", "message": "the request body is not valid JSON", "field": "body",
        "details": {"errors": [{"field": "body", "type": "json_invalid", "message": "JSON decode error"}]},
    }
    assert "required" in validation_error([{"loc": ("body",), "type": "missing", "msg": "x"}]).message


def test_every_code_we_answer_is_known_to_the_client() -> None:
    for code in ("invalid_request", "payload_too_large", "unauthorized", "not_found", "internal"):
        assert code in ERRORS_BY_CODE


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ({"userArn": "arn:aws:iam::1:user/a", "caller": "AIDA", "accessKey": "AKIA"}, "arn:aws:iam::1:user/a"),
        ({"userArn": None, "caller": "AIDA:session", "accessKey": "AKIA"}, "AIDA:session"),
        ({"userArn": "", "caller": None, "accessKey": "AKIA"}, "AKIA"),
        ({"userArn": None, "caller": None, "accessKey": None}, None),
        ({"userArn": "   "}, None),
        ({}, None),
    ],
)
def test_principal_of(identity: dict[str, Any], expected: str | None) -> None:
    assert principal_of({"requestContext": {"identity": identity}}) == expected


@pytest.mark.parametrize(
    "event", [{}, {"requestContext": None}, {"requestContext": {}}, {"requestContext": {"identity": "x"}}]
)
def test_principal_of_malformed_events(event: dict[str, Any]) -> None:
    assert principal_of(event) is None


def test_body_parser_limits_size_before_parsing() -> None:
    assert parse_json_body('{"a": 1}') == {"a": 1}
    with pytest.raises(PayloadTooLarge) as too_big:
        parse_json_body("x" * (MAX_BODY_BYTES + 1))  # not JSON either: the size is checked first
    assert too_big.value.field == "body"
    # multi-byte characters count as bytes, as Lambda counts them
    with pytest.raises(PayloadTooLarge):
        parse_json_body('"' + "é" * (MAX_BODY_BYTES // 2) + '"')
    with pytest.raises(InvalidRequest) as broken:
        parse_json_body('{"a": ')
    assert broken.value.field == "body" and not isinstance(broken.value, PayloadTooLarge)
