"""The one writer of task messages.

A message only says "task X of session S may be ready"; DynamoDB holds the truth and the worker's
conditional claim or commit decides. The sender that wrote a task's whole item may add it to the
message (``item``): a worker then takes the message's first delivery from it without reading the
item, as if it had read it when the message was sent. So duplicates are harmless, and a lost
message is repaired by the dispatch sweeper, which re-sends for queued tasks that stayed unclaimed
(the ``by_due`` index).
Sends are batched by 10 (the SQS maximum) per (partition, priority) queue; MessageGroupId is the
session id so SQS fair queues share a partition's workers between sessions.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from skyloom.core import clock
from skyloom.core.aws import client
from skyloom.core.config import Settings
from skyloom.core.graph import queue_level

MESSAGE_VERSION = 1
_urls: dict[tuple[Settings, str, int], str] = {}
_lock = threading.Lock()


class UndecodableMessage(ValueError):
    """A queue message that is not a Skyloom task message."""


@dataclass(frozen=True)
class TaskMessage:
    task_id: str
    session_id: str
    partition: str
    priority: int
    #: The task's item as its sender wrote it, in DynamoDB's JSON (binary values in base64); None
    #: when the sender did not write it whole or it is large (see ``readiness.message_for``).
    item: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    def body(self) -> str:
        fields: dict[str, Any] = {"v": MESSAGE_VERSION, "task_id": self.task_id, "session_id": self.session_id,
                                  "partition": self.partition, "priority": self.priority}
        if self.item is not None:
            fields["item"] = self.item
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def parse(cls, body: str) -> TaskMessage:
        try:
            raw: dict[str, object] = json.loads(body)
            if raw.get("v") != MESSAGE_VERSION:
                raise UndecodableMessage(f"unknown message version {raw.get('v')!r}")
            item = raw.get("item")
            return cls(str(raw["task_id"]), str(raw["session_id"]), str(raw["partition"]),
                       int(str(raw["priority"])), item if isinstance(item, dict) else None)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, UndecodableMessage):
                raise
            raise UndecodableMessage(f"not a task message: {body[:200]!r}") from exc


def queue_url(settings: Settings, partition: str, level: int) -> str:
    key = (settings, partition, level)
    url = _urls.get(key)
    if url is None:
        with _lock:
            url = _urls.get(key)
            if url is None:
                name = settings.queue_name(partition, level)
                url = client("sqs", settings).get_queue_url(QueueName=name)["QueueUrl"]
                _urls[key] = url
    return url


def queue_urls_by_priority(settings: Settings, partition: str) -> list[str]:
    """The partition's queues, highest priority first: the order workers drain them in."""
    spec = settings.partition(partition)
    if spec is None:
        raise ValueError(f"unknown partition {partition!r}")
    return [queue_url(settings, partition, lvl) for lvl in reversed(range(spec.priority_levels))]


#: Longest time between two checks that a queued task's message still exists: well inside the
#: queues' 14-day retention, so a message that expires unreceived is re-sent before its task is lost.
MAX_REDISPATCH_INTERVAL_SECONDS = 24 * 3600.0


def redispatch_interval(base: float, queued_for: float) -> float:
    """Seconds until the sweeper next re-sends a task that is still queued (``base`` after queueing).

    SQS cannot say whether a task's message still exists, so the sweeper re-sends the message of
    every task still queued at its check, and a fixed interval re-sent every task of a long backlog
    over and over (each copy costs a receive and a refused claim). The interval grows with the wait
    instead: the next check comes after as long again as the task has waited. A message lost when it
    was sent (a crash between the write and the send, the usual case) is still re-sent after
    ``base``; a task that waits W seconds gets about log2(W / base) copies rather than W / base.
    """
    return min(MAX_REDISPATCH_INTERVAL_SECONDS, max(base, queued_for))


#: Tries of a batch send whose entries SQS refused on its own side (it reports them entry by entry in
#: a successful answer, which botocore cannot retry), with short pauses between: a message not sent
#: waits for the sweeper's re-send, minutes later in production.
SEND_TRIES = 4
SEND_BACKOFF_SECONDS = (0.05, 0.5)


class DispatchFailed(RuntimeError):
    """Some messages could not be sent; their tasks stay queued and the sweeper re-sends them."""


#: Batches of one enqueue sent at once (each a network round trip).
_senders = ThreadPoolExecutor(max_workers=8, thread_name_prefix="skyloom-enqueue")


def _send_batch(sqs: Any, url: str, chunk: Sequence[TaskMessage], delay_seconds: int) -> tuple[int, list[str]]:
    """Send up to 10 messages; how many were sent, and the task ids SQS kept refusing."""
    entries = [
        {"Id": str(i), "MessageBody": m.body(), "MessageGroupId": m.session_id, "DelaySeconds": delay_seconds}
        for i, m in enumerate(chunk)
    ]
    sent = 0
    for attempt in range(1, SEND_TRIES + 1):
        resp = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        failures = resp.get("Failed", [])
        bad = {f["Id"] for f in failures}
        sent += len(entries) - len(bad)
        entries = [e for e in entries if e["Id"] in bad]
        if not entries or attempt == SEND_TRIES or any(f.get("SenderFault") for f in failures):
            break  # sent, out of tries, or refused for what it is (it would be again)
        time.sleep(clock.backoff(attempt, SEND_BACKOFF_SECONDS))
    return sent, [chunk[int(str(e["Id"]))].task_id for e in entries]


def enqueue(settings: Settings, messages: Iterable[TaskMessage], *, delay_seconds: int = 0) -> int:
    """Send one message per task, batched; returns how many were sent.

    Raises DispatchFailed if SQS refused some entries through :data:`SEND_TRIES` tries. Callers may let that propagate:
    the task is already recorded as queued, so nothing is lost, only delayed until the next sweep.
    """
    by_queue: dict[tuple[str, int], list[TaskMessage]] = defaultdict(list)
    for m in messages:
        spec = settings.partition(m.partition)
        levels = spec.priority_levels if spec else 1
        by_queue[(m.partition, queue_level(m.priority, levels))].append(m)
    sqs = client("sqs", settings)
    sent = 0
    failed: list[str] = []
    # Highest priority level first: an idle agent polling the queues must find the urgent tasks
    # there before the others arrive (resuming a session queues every level at once). Within a
    # level the batches go out concurrently: a 500-task submission is 50 calls, a round trip each.
    for (partition, level), msgs in sorted(by_queue.items(), key=lambda item: -item[0][1]):
        url = queue_url(settings, partition, level)
        chunks = [msgs[start : start + 10] for start in range(0, len(msgs), 10)]
        send = functools.partial(_send_batch, sqs, url, delay_seconds=delay_seconds)
        outcomes = list(_senders.map(send, chunks)) if len(chunks) > 1 else [send(chunks[0])]
        for n, refused in outcomes:
            sent += n
            failed.extend(refused)
    if failed:
        raise DispatchFailed(f"{len(failed)} task message(s) not sent, e.g. {failed[:3]}")
    return sent
