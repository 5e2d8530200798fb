"""AWS API calls are counted per (service, operation) in a process when SKYLOOM_COUNT_API_CALLS is
set: boto3 clients and pynamodb's both, and dumped to a file (what ``skyloom bench`` adds up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import boto3
from moto import mock_aws
from skyloom.core import aws  # starts counting: the variable is set

with mock_aws():
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for _ in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    from pynamodb.models import Model
    from pynamodb.attributes import UnicodeAttribute

    class M(Model):
        class Meta:
            table_name = "t"
            region = "us-east-1"
        k = UnicodeAttribute(hash_key=True)

    M.create_table(read_capacity_units=1, write_capacity_units=1, wait=True)
    M("a").save()
"""


def test_every_client_of_the_process_is_counted_and_dumped_at_exit(tmp_path: Path) -> None:
    env = {"SKYLOOM_COUNT_API_CALLS": str(tmp_path), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, timeout=120)

    (dump,) = tmp_path.glob("calls-*.json")
    calls = json.loads(dump.read_text())["calls"]
    assert calls["sqs"]["SendMessage"] == 3
    assert calls["sqs"]["CreateQueue"] == 1
    assert calls["dynamodb"]["PutItem"] == 1
