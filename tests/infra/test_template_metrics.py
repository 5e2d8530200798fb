"""Issue 15 in the CDK template: the measurements table (its own TTL), the workers' one
ecs:DescribeTasks, the price overrides in the functions' environment, and the velocity widgets."""

from __future__ import annotations

import json
from typing import Any

import pytest

aws_cdk = pytest.importorskip("aws_cdk")
from aws_cdk.assertions import Template  # noqa: E402

from skyloom.core.config import Settings  # noqa: E402
from skyloom.core.resources import MEASUREMENTS  # noqa: E402
from tests.infra.test_template import actions, of_type, statements  # noqa: E402


@pytest.fixture(scope="module")
def resources(default_template: Template) -> dict[str, Any]:
    out: dict[str, Any] = default_template.to_json()["Resources"]
    return out


def test_measurements_table_keeps_values_by_ttl_and_both_sides_may_use_it(resources: dict[str, Any]) -> None:
    tables = {t["Properties"]["TableName"]: t["Properties"]
              for t in of_type(resources, "AWS::DynamoDB::Table").values()}
    table = tables[Settings().table_name(MEASUREMENTS)]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    (logical,) = [k for k in of_type(resources, "AWS::DynamoDB::Table") if k.startswith("TablesMeasurements")]
    # Workers write measurements and run-time windows; the submit function reads them.
    for role in ("WorkersdefaulttaskTaskRole", "FunctionsSubmitServiceRole"):
        granted = [st for st in statements(resources, role) if logical in json.dumps(st["Resource"])]
        assert any("dynamodb:PutItem" in actions(st) and "dynamodb:Query" in actions(st) for st in granted), role


def test_workers_may_describe_their_own_tasks_only(resources: dict[str, Any]) -> None:
    found = [st for st in statements(resources) if "ecs:DescribeTasks" in actions(st)]
    assert found
    for st in found:
        text = json.dumps(st["Resource"])
        assert ":task/" in text and '"*"' not in text


def test_dashboard_shows_velocity_and_shape(default_template: Template, resources: dict[str, Any]) -> None:
    body = json.dumps(of_type(resources, "AWS::CloudWatch::Dashboard"))
    for needle in ("NumberOfMessagesSent", "TasksStarted", "PartitionBacklog", "PartitionMinWorkers",
                   "PartitionMaxWorkers", "queue velocity"):
        assert needle in body, needle
