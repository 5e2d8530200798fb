"""Local mode's fault injection on its own: configuration from the environment, and that each fault
reaches the caller as AWS's own answer would, through a real botocore client (nothing is sent: the
endpoint is a closed port, and every call here is answered by the injector or refused)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from skyloom.local import faults
from skyloom.local.faults import FaultConfig, blackout_start, blackout_victim

NOWHERE = "http://127.0.0.1:9"


def _client(service: str) -> Any:
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        region_name="us-east-1", endpoint_url=NOWHERE, aws_access_key_id="k", aws_secret_access_key="s",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    yield
    faults.deactivate()


def test_off_unless_configured() -> None:
    assert not FaultConfig.from_env({}).enabled
    assert not FaultConfig().enabled


def test_the_environment_round_trips() -> None:
    config = FaultConfig(transaction_conflict=0.1, server_error=0.05, throttling=0.01, batch_failure=0.02,
                         blackout_seconds=3, blackout_every=20, seed=7,
                         operations=frozenset({"TransactWriteItems"}), limit=4)
    assert FaultConfig.from_env(config.to_env()) == config
    assert FaultConfig.from_env({"SKYLOOM_FAULTS_BLACKOUT": "3/20"}).blackout_every == 20


@pytest.mark.parametrize("env", [
    {"SKYLOOM_FAULTS_SERVER_ERROR": "lots"},
    {"SKYLOOM_FAULTS_SERVER_ERROR": "1.5"},
    {"SKYLOOM_FAULTS_BLACKOUT": "3"},
    {"SKYLOOM_FAULTS_BLACKOUT": "20/3"},
])
def test_nonsense_is_refused_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"SKYLOOM_FAULTS_|between 0 and 1|0 < S < E"):
        FaultConfig.from_env(env)


def test_a_blackout_needs_the_counts_directory_to_find_the_other_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults.aws, "counting_directory", lambda: None)
    with pytest.raises(ValueError, match="SKYLOOM_COUNT_API_CALLS"):
        faults.activate(FaultConfig(blackout_seconds=3, blackout_every=20))


def test_a_conflict_is_dynamodbs_cancellation_with_one_reason_per_item() -> None:
    items = [{"Put": {"TableName": "t", "Item": {"k": {"S": str(i)}}}} for i in range(3)]
    with faults.injecting(FaultConfig(transaction_conflict=1.0)), pytest.raises(ClientError) as err:
        _client("dynamodb").transact_write_items(TransactItems=items)
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    codes = [r["Code"] for r in err.value.response["CancellationReasons"]]
    assert sorted(codes) == ["None", "None", "TransactionConflict"]
    assert faults.fault_counts()["transaction_conflict"]["dynamodb.TransactWriteItems"] >= 1


@pytest.mark.parametrize(("service", "call", "status", "code"), [
    ("dynamodb", lambda c: c.list_tables(), 400, "ThrottlingException"),
    ("sqs", lambda c: c.list_queues(), 403, "RequestThrottled"),
    ("s3", lambda c: c.list_buckets(), 503, "SlowDown"),
    ("dynamodb", lambda c: c.transact_write_items(TransactItems=[
        {"Put": {"TableName": "t", "Item": {"k": {"S": "a"}}}}]), 400, "TransactionCanceledException"),
])
def test_throttling_answers_as_each_service_throttles(service: str, call: Any, status: int, code: str) -> None:
    with faults.injecting(FaultConfig(throttling=1.0)), pytest.raises(ClientError) as err:
        call(_client(service))  # built once injection is on, as in a process started with it
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if code == "TransactionCanceledException":
        assert [r["Code"] for r in err.value.response["CancellationReasons"]] == ["ThrottlingError"]


@pytest.mark.parametrize("service", ["dynamodb", "sqs", "s3"])
def test_a_server_error_is_a_500_or_503_that_botocore_retries(service: str) -> None:
    seen: Counter[int] = Counter()
    for _ in range(2):
        with faults.injecting(FaultConfig(server_error=1.0)), pytest.raises(ClientError) as err:
            c = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                region_name="us-east-1", endpoint_url=NOWHERE, aws_access_key_id="k", aws_secret_access_key="s",
                config=Config(retries={"total_max_attempts": 2, "mode": "standard"}),
            )
            getattr(c, {"dynamodb": "list_tables", "sqs": "list_queues", "s3": "list_buckets"}[service])()
        meta = err.value.response["ResponseMetadata"]
        seen[meta["HTTPStatusCode"]] += 1
        assert meta["RetryAttempts"] == 1  # retried by botocore, as AWS's own 5xx are
    assert set(seen) <= {500, 503}


def test_a_batch_failure_is_a_success_with_every_entry_failed() -> None:
    entries = [{"Id": str(i), "MessageBody": "m"} for i in range(3)]
    with faults.injecting(FaultConfig(batch_failure=1.0)):
        resp = _client("sqs").send_message_batch(QueueUrl=f"{NOWHERE}/000000000000/q", Entries=entries)
    assert resp.get("Successful", []) == []
    assert [(f["Id"], f["SenderFault"], f["Code"]) for f in resp["Failed"]] == [
        (str(i), False, "InternalError") for i in range(3)]


def test_operations_and_limit_aim_at_one_failure() -> None:
    config = FaultConfig(server_error=1.0, operations=frozenset({"ListTables"}), limit=1)
    with faults.injecting(config):
        ddb = _client("dynamodb")
        with pytest.raises(ClientError):
            ddb.list_tables()
        with pytest.raises(EndpointConnectionError):  # not injected: the call goes to the closed port
            ddb.list_tables()
        with pytest.raises(EndpointConnectionError):
            ddb.describe_limits()


def test_blackout_windows_pick_one_live_process_each_and_end_inside_their_window() -> None:
    pids = [101, 202, 303, 404]
    victims = [blackout_victim(7, w, pids) for w in range(400)]
    assert all(v in pids for v in victims)
    assert set(Counter(victims)) == set(pids)  # every process gets its turn
    assert victims == [blackout_victim(7, w, list(reversed(pids))) for w in range(400)]  # all agree
    assert blackout_victim(7, 1, []) is None
    for w in range(100):
        start = blackout_start(7, w, 3.0, 20.0)
        assert w * 20.0 <= start and start + 3.0 <= (w + 1) * 20.0


def test_the_gateway_answers_503_429_or_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    with faults.injecting(FaultConfig(server_error=1.0)):
        fault = faults.api_gateway_fault()
        assert fault is not None and fault.status == 503
    with faults.injecting(FaultConfig(throttling=1.0)):
        fault = faults.api_gateway_fault()
        assert fault is not None and fault.status == 429
    assert faults.api_gateway_fault() is None
