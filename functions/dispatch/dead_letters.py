"""Drain the dead-letter queues: a message that kept failing is turned into a visible failure.

SQS moves a task message to its queue's DLQ after ``max_receive_count`` receives without a delete,
i.e. after workers repeatedly failed to process it (a claim that always raises, an undecodable
body). Left there, the task would sit in Submitted while the sweeper re-sends it forever, and the
client would wait forever. So the dispatch function, on each scheduled run, receives from every
DLQ and:

- marks the named task Error with the reason (only if it is still queued: see
  :func:`skyloom.core.retries.fail_undeliverable`, which aborts its outputs like any final
  failure, so dependents are cancelled and the client sees why), then deletes the message;
- logs, counts and deletes a message that does not even name a task (nothing else can use it).

A message is deleted only after DynamoDB has recorded the outcome: a crash in between leaves it to
the next run, and the conditional write makes that replay harmless.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from skyloom.core.aws import client
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage, UndecodableMessage
from skyloom.core.retries import fail_undeliverable

log = logging.getLogger(__name__)

#: Receive calls per DLQ and run: bounds a run's duration (10 messages each) if a DLQ is flooded.
MAX_BATCHES = 20

_urls: dict[tuple[Settings, str], str] = {}


def dead_letter_queue_urls(settings: Settings) -> list[str]:
    """Every DLQ of the stack (one per partition and priority level); cached per process."""
    urls = []
    sqs = client("sqs", settings)
    for p in settings.partitions:
        for level in range(p.priority_levels):
            name = settings.dlq_name(p.name, level)
            url = _urls.get((settings, name))
            if url is None:
                url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
                _urls[(settings, name)] = url
            urls.append(url)
    return urls


def reason_for(message: dict[str, Any]) -> str:
    count = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    return (f"its queue message could not be processed after {count} deliveries and was moved to the "
            "dead-letter queue (see the worker logs for the failure)")


def handle(settings: Settings, message: dict[str, Any]) -> str:
    """What became of one dead letter (for logs and metrics); the caller deletes it afterwards."""
    try:
        task = TaskMessage.parse(message.get("Body", ""))
    except UndecodableMessage as exc:
        log.warning("deleting an undecodable dead letter %s: %s", message.get("MessageId"), exc)
        return "undecodable"
    if fail_undeliverable(settings, task.task_id, reason_for(message)):
        log.warning("task %s marked Error: its message reached the dead-letter queue", task.task_id)
        return "task_failed"
    return "stale"  # the task was running, final or gone: the dead letter was an old duplicate


def drain(settings: Settings, *, max_batches: int = MAX_BATCHES) -> Counter[str]:
    """One pass over every DLQ; returns counts of outcomes. A failing DLQ is logged and skipped."""
    done: Counter[str] = Counter()
    sqs = client("sqs", settings)
    try:
        urls = dead_letter_queue_urls(settings)
    except Exception:
        log.exception("could not resolve the dead-letter queues")
        done["error"] += 1
        return done
    for url in urls:
        try:
            _drain_one(settings, sqs, url, max_batches, done)
        except Exception:
            log.exception("could not drain dead-letter queue %s", url)
            done["error"] += 1
    return done


def _drain_one(settings: Settings, sqs: Any, url: str, max_batches: int, done: Counter[str]) -> None:
    for _ in range(max_batches):
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                   AttributeNames=["ApproximateReceiveCount"])
        messages: list[dict[str, Any]] = resp.get("Messages", [])
        if not messages:
            return
        handled = []
        for i, m in enumerate(messages):
            try:
                done[handle(settings, m)] += 1
                handled.append({"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]})
            except Exception:  # left in the DLQ: it comes back after its visibility timeout
                log.exception("could not handle dead letter %s", m.get("MessageId"))
                done["error"] += 1
        if handled:
            sqs.delete_message_batch(QueueUrl=url, Entries=handled)
