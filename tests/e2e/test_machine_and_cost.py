"""Each attempt says where it ran, and ``skyloom stats`` breaks durations down by it and prices the
session (issue 15), on the local stack: real workers, real HTTP, the CLI parsed back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import skyloom
from skyloom.cli import app

pytestmark = pytest.mark.slow

TIMEOUT = 120.0


@skyloom.task
def where_square(x: int) -> int:
    return x * x


def _run(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(app, [*args], env={"SKYLOOM_ENDPOINT": endpoint}, catch_exceptions=False)


def _json(endpoint: str, *args: str) -> Any:
    r = _run(endpoint, *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads("".join(line for line in r.stdout.splitlines(keepends=True) if '"service":"skyloom-' not in line))


def test_attempts_record_the_machine_and_stats_price_the_session(local_stack: Any, client: skyloom.Client) -> None:
    # GIVEN a session of a few tasks run by the local stack's workers
    with client.session(name="where") as s:
        futures = [where_square.submit(i) for i in range(3)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == [0, 1, 4]

    # WHEN its tasks are read back, THEN every attempt names the machine it ran on (locally: 'local')
    (task,) = client.get_tasks(s.session_id, [futures[0].task_id])
    m = task.attempts[-1].machine
    assert m is not None and (m.instance_type, m.availability_zone, m.capacity) == ("local", "local", "local")
    assert m.vcpus >= 1 and m.memory_mb > 0 and m.cpu_model
    shown = _run(local_stack.endpoint, "tasks", "show", task.task_id, "--session", s.session_id)
    assert shown.exit_code == 0 and "machine: local," in shown.stdout  # the rest may wrap on a narrow terminal

    # AND stats break run times down by machine and give the estimated cost with its breakdown
    stats = _json(local_stack.endpoint, "stats", s.session_id)
    assert {row["machine"] for row in stats["machines"]} == {m.label()}
    assert sum(row["count"] for row in stats["machines"]) == 3
    bill = stats["cost"]
    assert bill["currency"] == "USD" and bill["total"] > 0
    assert bill["total"] == pytest.approx(sum(line["dollars"] for line in bill["compute"] + bill["requests"]))
    assert list(bill["compute_seconds"]) == ["default"]
    assert {line["item"] for line in bill["requests"]} >= {"SQS requests", "DynamoDB writes", "API Gateway requests"}
    text = _run(local_stack.endpoint, "stats", s.session_id)
    assert text.exit_code == 0 and "estimated cost: $" in text.stdout and "run time by machine" in text.stdout
