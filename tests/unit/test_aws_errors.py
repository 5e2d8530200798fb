"""Which AWS failures are AWS's (unreachable, busy: try again later) and which are the request's."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from pynamodb.exceptions import GetError, TransactWriteError

from skyloom.core.aws import transient_error
from skyloom.errors import Conflict


def _client_error(status: int, code: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status},
                        **extra}, "Op")


def _cancelled(*codes: str) -> ClientError:
    return _client_error(400, "TransactionCanceledException", CancellationReasons=[{"Code": c} for c in codes])


@pytest.mark.parametrize(("exc", "transient"), [
    (EndpointConnectionError(endpoint_url="http://x"), True),
    (ReadTimeoutError(endpoint_url="http://x"), True),
    (_client_error(500, "InternalServerError"), True),
    (_client_error(503, "ServiceUnavailable"), True),
    (_client_error(400, "ThrottlingException"), True),
    (_client_error(400, "ProvisionedThroughputExceededException"), True),
    (_cancelled("None", "TransactionConflict"), True),
    (_cancelled("ThrottlingError"), True),
    (_cancelled("ConditionalCheckFailed", "TransactionConflict"), False),  # a condition refused it
    (_client_error(400, "ConditionalCheckFailedException"), False),
    (_client_error(400, "ValidationException"), False),
    (_client_error(404, "NoSuchKey"), False),
    (GetError("Failed to get item", EndpointConnectionError(endpoint_url="http://x")), True),  # pynamodb's wrapper
    (TransactWriteError("Failed", _client_error(400, "ValidationException")), False),
    (Conflict("input r1 is Deleted"), False),
    (ValueError("a bug"), False),
])
def test_transient_errors_are_aws_being_unreachable_or_busy(exc: BaseException, transient: bool) -> None:
    assert transient_error(exc) is transient


def test_a_wrapped_error_is_looked_through() -> None:
    try:
        try:
            raise _client_error(500, "InternalError")
        except ClientError as inner:
            raise RuntimeError("while loading inputs") from inner
    except RuntimeError as outer:
        assert transient_error(outer)


def test_dynamodb_calls_retry_with_dynamodbs_own_short_backoff() -> None:
    # pynamodb's clients and ours: botocore's DynamoDB policy (10 attempts from 50 ms), not the
    # generic one (pauses drawn up to 1, 2, 4 s) that made one 500 cost half a second.
    from pynamodb.connection import Connection

    from skyloom.core import aws, models
    from skyloom.core.config import Settings

    assert models.DYNAMODB_RETRIES  # importing the models sets pynamodb's default

    pynamodb_client = Connection(region="us-east-1", host="http://127.0.0.1:9").client
    ours = aws.client("dynamodb", Settings(aws_endpoint="http://127.0.0.1:9"))
    for c in (pynamodb_client, ours):
        assert c.meta.config.retries == {"mode": "legacy", "total_max_attempts": 10}
