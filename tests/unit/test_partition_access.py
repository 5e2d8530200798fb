"""Partition access rules: identity patterns, handler rules, their env contract, and the worker's check.

The worker-side check must refuse code shipped by value *before* anything is unpickled: the test
ships a pickle that would create a file when loaded and proves the file never appears.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from skyloom.client.callspec import encode
from skyloom.core.access import handler_refusal, identity_allowed
from skyloom.core.config import POLICIES_ENV, Settings
from skyloom.core.resources import CODE_BY_VALUE_HANDLER, PartitionSpec
from skyloom.runtime.admission import WORKER_PARTITION_ENV, HandlerRefused, check_admitted
from skyloom.runtime.executor import run_task
from skyloom.runtime.outcome import TaskInput

TEAM_A = PartitionSpec(
    "risk",
    allowed_identities=("arn:aws:iam::111122223333:role/team-a/Quants", "arn:aws:iam::111122223333:user/ops-*"),
)


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        ("arn:aws:sts::111122223333:assumed-role/Quants/alice@bank", True),  # a session on the role
        ("arn:aws:iam::111122223333:role/team-a/Quants", True),
        ("arn:aws:iam::111122223333:user/ops-batch", True),
        ("arn:aws:sts::111122223333:assumed-role/QuantsAdmin/alice", False),  # another role
        ("arn:aws:sts::999999999999:assumed-role/Quants/alice", False),  # another account
        ("arn:aws:iam::111122223333:user/OPS-batch", False),  # ARNs compare case-sensitively
        ("arn:aws:iam::111122223333:user/mallory", False),
    ],
)
def test_identity_patterns(principal: str, allowed: bool) -> None:
    assert identity_allowed(TEAM_A, principal) is allowed


def test_an_empty_allow_list_admits_everyone_and_handler_rules() -> None:
    assert identity_allowed(PartitionSpec("open"), "arn:aws:iam::1:user/anyone")
    shared = PartitionSpec("shared", installed_handlers_only=True, allowed_handlers=("risk.*", CODE_BY_VALUE_HANDLER))
    refusal = handler_refusal(shared, CODE_BY_VALUE_HANDLER)
    assert refusal is not None and "installed handlers only" in refusal, "the flag wins over the list"
    assert handler_refusal(shared, "risk.var") is None
    assert "does not run handler 'pricing.x'" in (handler_refusal(shared, "pricing.x") or "")
    assert handler_refusal(PartitionSpec("open"), CODE_BY_VALUE_HANDLER) is None


def test_bad_partition_specs_name_the_field() -> None:
    with pytest.raises(ValueError, match="allowed_identities must be a list of non-empty strings"):
        PartitionSpec("p", allowed_identities=("",))
    with pytest.raises(ValueError, match="installed_handlers_only must be true or false"):
        PartitionSpec("p", installed_handlers_only="yes")  # type: ignore[arg-type]
    assert PartitionSpec("p", allowed_handlers=["a.*"]).allowed_handlers == ("a.*",)  # type: ignore[arg-type]


def test_policies_travel_through_the_environment_and_bad_ones_fail_closed() -> None:
    gpu = PartitionSpec("gpu", installed_handlers_only=True)
    settings = Settings(partitions=(PartitionSpec("default"), TEAM_A, gpu))
    env = settings.to_env()
    assert set(json.loads(env[POLICIES_ENV])) == {"risk", "gpu"}, "only restricted partitions are shipped"
    assert Settings.from_env(env).partitions == settings.partitions
    assert POLICIES_ENV not in Settings().to_env()
    for bad, message in [("{", "not valid JSON"), ('{"nope": {}}', "not in SKYLOOM_PARTITIONS"),
                         ('{"default": {"allowed": []}}', "keys among")]:
        with pytest.raises(ValueError, match=message):
            Settings.from_env({"SKYLOOM_PARTITIONS": "default", POLICIES_ENV: bad})
    with pytest.raises(ValueError, match="SKYLOOM_PRESIGN_SECONDS must be between 1 and 3600"):
        Settings.from_env({"SKYLOOM_PRESIGN_SECONDS": str(7 * 24 * 3600)})
    assert Settings().presign_seconds == 300


class _Boom:
    """Unpickling this creates a file: the marker that code shipped by value ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _shipped_code(marker: Path) -> bytes:
    """A ``skyloom.call`` payload whose call spec, once unpickled, has created ``marker``."""
    return encode(pickle.dumps(_Boom(marker)), [])


@pytest.mark.parametrize(
    ("task_partition", "worker_partition"),
    [("gpu", "gpu"), ("default", "gpu"), ("gpu", "default")],
    ids=["both", "worker-only", "task-only"],
)
def test_the_worker_refuses_code_by_value_before_unpickling_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task_partition: str, worker_partition: str
) -> None:
    monkeypatch.setenv("SKYLOOM_PARTITIONS", "default,gpu")
    monkeypatch.setenv(POLICIES_ENV, json.dumps({"gpu": {"installed_handlers_only": True}}))
    monkeypatch.setenv(WORKER_PARTITION_ENV, worker_partition)
    marker = tmp_path / "ran"
    payload = _shipped_code(marker)
    outcome = run_task(TaskInput("t1", "s1", CODE_BY_VALUE_HANDLER, payload, {}, ["r1"], {"partition": task_partition}))
    assert outcome.error is not None
    assert outcome.error.type == "skyloom.runtime.admission.HandlerRefused"
    assert "installed handlers only" in outcome.error.message
    assert outcome.error.retryable is False
    assert not marker.exists(), "the payload was unpickled on a partition that refuses code by value"


def test_control_the_same_payload_is_unpickled_on_an_open_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proves the refusal test above is not vacuous: without the rule, the marker appears."""
    monkeypatch.setenv("SKYLOOM_PARTITIONS", "default,gpu")
    monkeypatch.setenv(POLICIES_ENV, json.dumps({"gpu": {"installed_handlers_only": True}}))
    monkeypatch.setenv(WORKER_PARTITION_ENV, "default")
    marker = tmp_path / "ran"
    run_task(TaskInput("t1", "s1", CODE_BY_VALUE_HANDLER, _shipped_code(marker), {}, ["r1"], {"partition": "default"}))
    assert marker.exists()


def test_the_worker_check_passes_installed_handlers_and_open_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYLOOM_PARTITIONS", "default,gpu")
    policy = {"installed_handlers_only": True, "allowed_handlers": ["risk.*"]}
    monkeypatch.setenv(POLICIES_ENV, json.dumps({"gpu": policy}))
    monkeypatch.setenv(WORKER_PARTITION_ENV, "gpu")
    check_admitted("risk.var", {"partition": "gpu"})
    with pytest.raises(HandlerRefused, match="does not run handler 'other'"):
        check_admitted("other", {"partition": "gpu"})
    monkeypatch.setenv(WORKER_PARTITION_ENV, "default")
    check_admitted(CODE_BY_VALUE_HANDLER, {"partition": "default"})
    monkeypatch.setenv(POLICIES_ENV, "{broken")
    with pytest.raises(ValueError, match=POLICIES_ENV):
        check_admitted("risk.var", {"partition": "gpu"})
