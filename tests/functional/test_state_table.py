"""Every status change of the functional suite obeys the state table (``aws_stack`` checks each);
this proves that the check itself catches a write the table lacks."""

from __future__ import annotations

import pytest
from moto import mock_aws

from skyloom.core import clock, models
from skyloom.core.config import Settings
from skyloom.core.models import TaskModel
from skyloom.core.states import TaskStatus
from skyloom.local.provision import provision
from tests.functional.conftest import TEST_ENV, _audit_transitions


def test_a_status_change_the_table_lacks_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SKYLOOM_AWS_ENDPOINT", raising=False)
    monkeypatch.delenv("SKYLOOM_SQS_ENDPOINT", raising=False)
    with mock_aws():
        settings = Settings.from_env()
        provision(settings)
        models.bind(settings)
        violations = _audit_transitions(monkeypatch, settings)
        TaskModel(task_id="t", session_id="s", owner="o", status=TaskStatus.COMPLETED.value, handler="h",
                  partition="default", created_at=clock.now(), updated_at=clock.now()).save()
        # WHEN code moves a completed task back to the queue (no such edge)
        TaskModel("t").update(actions=[TaskModel.status.set(TaskStatus.SUBMITTED.value)])
        # THEN the check names it
        assert violations == ["tasks {'S': 't'}: Completed -> Submitted"]
