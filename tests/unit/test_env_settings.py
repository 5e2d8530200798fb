"""One rule reads every Skyloom environment variable: the stack's, the agent's and local mode's.

Surrounding whitespace is ignored, a blank value is unset (the default), and a value that does not
parse is refused with the variable and the value named. The control plane and the agent used to
differ on whitespace; these tests hold the three readers (skyloom.core.config.EnvReader) to one rule.
"""

from __future__ import annotations

import pytest

from skyloom.core.config import Settings
from skyloom.local.faults import FaultConfig
from skyloom_server.fargate_worker.settings import WorkerConfigError, WorkerSettings


def test_whitespace_is_ignored_and_blank_is_unset_alike() -> None:
    assert Settings.from_env({"SKYLOOM_LEASE_SECONDS": " 12.5\n", "SKYLOOM_VISIBILITY_TIMEOUT": "   "}) == Settings(
        lease_seconds=12.5
    )
    assert WorkerSettings.from_env({"SKYLOOM_WORKER_PREFETCH": " 3 ", "SKYLOOM_WORKER_POLL_WAIT": " "}) == (
        WorkerSettings(prefetch=3)
    )
    assert FaultConfig.from_env({"SKYLOOM_FAULTS_SEED": " 7 ", "SKYLOOM_FAULTS_LIMIT": ""}) == FaultConfig(seed=7)


def test_unset_keeps_the_defaults_written_on_the_dataclasses() -> None:
    assert Settings.from_env({}) == Settings()
    assert WorkerSettings.from_env({}) == WorkerSettings()
    assert FaultConfig.from_env({}) == FaultConfig()


def test_the_region_falls_back_to_aws_default_region_and_the_bucket_follows_the_stack() -> None:
    s = Settings.from_env({"AWS_DEFAULT_REGION": "eu-west-1", "SKYLOOM_STACK": "team-a"})
    assert (s.region, s.bucket) == ("eu-west-1", "team-a-data")
    assert Settings.from_env({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"}).region == "us-west-2"


def test_settings_round_trip_through_the_environment() -> None:
    s = Settings(stack="st", aws_endpoint="http://127.0.0.1:1", lease_seconds=5.0, presign_seconds=60)
    assert Settings.from_env(s.to_env()) == s
    apart = Settings(aws_endpoint="http://127.0.0.1:1", sqs_endpoint="http://127.0.0.1:2")
    assert Settings.from_env(apart.to_env()) == apart


def test_sqs_has_its_own_endpoint_only_when_one_is_set() -> None:
    together = Settings(aws_endpoint="http://127.0.0.1:1")
    assert together.endpoint("sqs") == together.endpoint("dynamodb") == "http://127.0.0.1:1"
    apart = Settings(aws_endpoint="http://127.0.0.1:1", sqs_endpoint="http://127.0.0.1:2")
    assert (apart.endpoint("sqs"), apart.endpoint("s3")) == ("http://127.0.0.1:2", "http://127.0.0.1:1")
    assert Settings().endpoint("sqs") is None  # AWS's own


@pytest.mark.parametrize(
    ("reader", "key", "value", "words"),
    [
        (Settings.from_env, "SKYLOOM_LEASE_SECONDS", "soon", "must be a number, got 'soon'"),
        (Settings.from_env, "SKYLOOM_VISIBILITY_TIMEOUT", "1.5", "must be an integer, got '1.5'"),
        (WorkerSettings.from_env, "SKYLOOM_WORKER_SLOTS", "many", "must be an integer, got 'many'"),
        (WorkerSettings.from_env, "SKYLOOM_WORKER_OVERLAP_REPORTS", "perhaps", "must be true or false"),
        (FaultConfig.from_env, "SKYLOOM_FAULTS_SEED", "x", "must be an integer, got 'x'"),
    ],
)
def test_a_bad_value_names_the_variable(reader: object, key: str, value: str, words: str) -> None:
    with pytest.raises(ValueError, match=key) as info:
        reader({key: f" {value} "})  # type: ignore[operator]
    assert words in str(info.value)


def test_the_agent_raises_its_own_error_type() -> None:
    with pytest.raises(WorkerConfigError, match="SKYLOOM_WORKER_GRACE_SECONDS must be a number"):
        WorkerSettings.from_env({"SKYLOOM_WORKER_GRACE_SECONDS": "long"})
