"""The sweeper's partition gauges (issue 15): backlog, in-flight, min/max workers, once a minute."""

from __future__ import annotations

import json

import boto3
import pytest

from skyloom.core.config import Settings
from skyloom.core.dispatching import queue_urls_by_priority
from skyloom_server.functions.dispatch import velocity


def test_gauges_sum_every_level_and_carry_the_shape(aws_stack: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    sqs = boto3.client("sqs", region_name=aws_stack.region)
    urls = queue_urls_by_priority(aws_stack, "default")
    for url in urls:
        sqs.send_message(QueueUrl=url, MessageBody="{}")
    sqs.receive_message(QueueUrl=urls[0], MaxNumberOfMessages=1)  # one in flight
    gauges = {g.partition: g for g in velocity.read(aws_stack)}
    assert set(gauges) == {p.name for p in aws_stack.partitions}
    gauge = gauges["default"]
    assert (gauge.partition, gauge.backlog, gauge.in_flight) == ("default", len(urls) - 1, 1)
    spec = aws_stack.partition("default")
    assert spec is not None and (gauge.min_workers, gauge.max_workers) == (spec.min_workers, spec.max_workers)
    velocity.publish([gauge])
    emf = json.loads([line for line in capsys.readouterr().out.splitlines() if "PartitionBacklog" in line][-1])
    assert emf["partition"] == "default" and emf["PartitionBacklog"] in (len(urls) - 1, [len(urls) - 1])


def test_cadence_is_once_a_minute_however_often_the_sweeper_runs() -> None:
    cadence = velocity.Cadence(every=60)
    assert cadence.due(now=0.0) and not cadence.due(now=1.0) and not cadence.due(now=59.0) and cadence.due(now=60.0)
