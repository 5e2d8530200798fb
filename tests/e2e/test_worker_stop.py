"""A stopped agent leaves no receive behind: the next message sent is there for whoever polls next.

SQS (moto and LocalStack alike) ends a long poll when its wait is over, not when its caller goes
away; an agent process that exited with one in flight made the next message sent to that level
invisible for a whole visibility timeout. Seen as a README task that waited two minutes on
LocalStack, where ``make demo``'s stack, sharing the queues, had just stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyloom.core.aws import client
from skyloom.core.dispatching import queue_urls_by_priority
from skyloom.local import LocalStack
from tests.e2e.stacks import wait_for_agents

pytestmark = pytest.mark.slow

UPPER_POLL_WAIT = 5


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    s = LocalStack(workers=1, sweep_interval=60.0, run_dir=tmp_path,
                   worker_env={"SKYLOOM_WORKER_UPPER_POLL_WAIT": str(UPPER_POLL_WAIT)})
    with s:
        yield s


def test_a_stopped_worker_leaves_no_long_poll_to_take_the_next_message(stack: LocalStack) -> None:
    # GIVEN an idle worker whose upper priority levels each have a long poll in flight
    urls = queue_urls_by_priority(stack.settings, "default")
    assert len(urls) > 1, "the stack needs upper priority levels"
    wait_for_agents(stack)
    time.sleep(1.0)

    # WHEN it is stopped (SIGTERM), and a message is sent to the top level right after it exits
    stack.workers.stop(timeout=UPPER_POLL_WAIT + 10)
    sqs = client("sqs", stack.settings)
    sqs.send_message(QueueUrl=urls[0], MessageBody="sent after the stop")

    # THEN the next receive gets it: no poll of the stopped worker took it
    got = sqs.receive_message(QueueUrl=urls[0], WaitTimeSeconds=1, MaxNumberOfMessages=1)
    assert [m["Body"] for m in got.get("Messages", [])] == ["sent after the stop"]
