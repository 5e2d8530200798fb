"""The agent's SQS side: receiving task messages, keeping them invisible while their tasks run,
and settling them (delete, or make visible again), batched.

Every call that can take a batch takes one: ReceiveMessage up to 10 messages, and
ChangeMessageVisibilityBatch / DeleteMessageBatch up to 10 entries per call per queue. Settling
lingers (:data:`DELETE_LINGER_SECONDS`, :data:`RETURN_LINGER_SECONDS`) so that the reports of a
busy agent share calls instead of making one each; a batch that fills up is sent at once.

A message is only a hint ("task X may be ready"): DynamoDB is the truth and the claim is a
conditional write. That is why every failure here is harmless and merely logged: a message that
could not be deleted comes back after its visibility timeout and the next claim discards it; one
that could not be made visible comes back at the end of its visibility timeout instead of now.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from skyloom.core import readiness
from skyloom.core.dispatching import TaskMessage, UndecodableMessage
from skyloom.core.models import TaskModel
from skyloom.runtime.outcome import RemoteError, TaskInput
from skyloom_server.fargate_worker.child import ChildProcess
from skyloom_server.fargate_worker.policy import MAX_RECEIVE
from skyloom_server.fargate_worker.telemetry import AttemptTrace, logger

#: How long a delete may wait for others to share its batch call. Nobody waits for a delete (its
#: task's fate is already in DynamoDB), so it may wait long enough to gather the completions of a
#: few slots; it stays far below any visibility timeout, so that the message does not come back.
DELETE_LINGER_SECONDS = 1.0
#: The same for a give-back (a message made visible again): short, since another agent is waiting.
RETURN_LINGER_SECONDS = 0.2


@dataclass(eq=False)
class Held:
    """One received message from receipt to deletion; the heartbeat keeps it (and its task) alive."""

    queue_url: str
    receipt: str
    message: TaskMessage
    next_beat: float
    #: The task's item as read with its batch (None: not read, or gone), see ``claims.take``.
    snapshot: TaskModel | None = None
    #: Whether ``snapshot`` holds a read (a failed batch read leaves the claim to read it).
    read: bool = False
    #: Set once taken or claimed: from then on the heartbeat extends the lease too (and claims a
    #: taken task that runs long enough to heartbeat).
    task: TaskModel | None = None
    #: Held by the heartbeat's claim of a taken task and by the start of its report, so that a
    #: report never builds its commit from a task the heartbeat is claiming at that moment.
    claim_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set while the task's code runs: what a lost lease kills.
    child: ChildProcess | None = None
    #: When the task's code started (monotonic): a taken task running this long gets claimed.
    running_since: float = 0.0
    #: complete/fail/release under way: a refused heartbeat then means "done", not "stolen".
    reporting: bool = False
    lost: threading.Event = field(default_factory=threading.Event)
    #: The memory warning was given for this attempt (once is enough).
    memory_warned: bool = False
    #: Largest resident memory of the task's child seen by the memory watch, in bytes.
    memory_peak: int = 0
    #: Set once claimed: the attempt's X-Ray trace (phases on several threads).
    trace: AttemptTrace | None = None
    #: Set by a preparer (prefetch): the claimed task's inputs, or why they could not be loaded,
    #: and the metrics gathered so far.
    prepared: tuple[TaskInput | RemoteError, dict[str, float]] | None = None


class Settle(StrEnum):
    """What becomes of a message its agent is done with."""

    DELETE = "delete"  # DynamoDB knows what became of its task
    RETURN = "return"  # visible again at once: another agent (or this one) decides with DynamoDB


class Mailbox:
    """SQS calls of one agent. Thread-safe: slots, reporters, the heartbeat and the poller share it.

    Args:
        sqs: a boto3 SQS client.
        visibility_timeout: seconds a received message stays invisible, and each extension.
        beat_every: seconds between two heartbeats of a held message (its first is due then).
        count: counts events by name in the agent's stats.
        delete_linger: see :data:`DELETE_LINGER_SECONDS`.
        return_linger: see :data:`RETURN_LINGER_SECONDS`.
    """

    def __init__(self, sqs: Any, *, visibility_timeout: int, beat_every: float, count: Callable[[str], None],
                 delete_linger: float = DELETE_LINGER_SECONDS, return_linger: float = RETURN_LINGER_SECONDS) -> None:
        self._sqs = sqs
        self._visibility = visibility_timeout
        self._beat_every = beat_every
        self._count = count
        self._linger = {Settle.DELETE: delete_linger, Settle.RETURN: return_linger}
        self._lock = threading.Condition()
        self._pending: dict[tuple[Settle, str], list[Held]] = {}
        self._since: dict[tuple[Settle, str], float] = {}  # when each pending batch got its first entry
        self._sending = 0  # settles taken from _pending whose call has not returned yet
        self._closed = False
        self._flusher: threading.Thread | None = None

    # ---------------------------------------------------------------------------- receiving
    def receive(self, plan: Sequence[tuple[str, int]], budget: int, stop: threading.Event) -> list[Held] | None:
        """One round of :func:`~fargate_worker.policy.poll_plan`: the first non-empty batch, decoded
        (undecodable messages left out); None if every queue was empty.

        Raises:
            Exception: the receive failed (past boto3's retries); the caller backs off.
        """
        for url, wait in plan:
            if stop.is_set():
                break
            resp = self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(budget, MAX_RECEIVE), WaitTimeSeconds=wait,
                VisibilityTimeout=self._visibility, MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            messages: list[dict[str, Any]] = resp.get("Messages", [])
            if messages:
                return [h for h in (self._decode(url, m) for m in messages) if h is not None]
        return None

    def _decode(self, url: str, m: Mapping[str, Any]) -> Held | None:
        try:
            message = TaskMessage.parse(m["Body"])
        except UndecodableMessage as exc:
            # Left alone: after maxReceiveCount deliveries the redrive policy moves it to the DLQ.
            self._count("undecodable")
            logger.warning("leaving an undecodable message to the dead-letter queue",
                           extra={"message_id": m.get("MessageId"), "error": str(exc)})
            return None
        held = Held(url, m["ReceiptHandle"], message, next_beat=time.monotonic() + self._beat_every)
        # The first delivery of a message that carries its task's item is taken from it, as read when
        # sent: nothing but a cancellation can have changed it since, and the commit's condition sees
        # that. A later delivery follows a lost or crashed attempt: the item is read again.
        if m.get("Attributes", {}).get("ApproximateReceiveCount") == "1":
            task = readiness.item_task(message)
            if task is not None:
                held.snapshot, held.read = task, True
        return held

    # ----------------------------------------------------------------------------- extending
    def extend(self, helds: Sequence[Held]) -> None:
        """Push back the visibility timeout of each message, batched: one call per beat for a
        busy multi-slot agent instead of one per held message."""
        for url, chunk in _chunks(helds):
            entries = [{"Id": str(i), "ReceiptHandle": h.receipt, "VisibilityTimeout": self._visibility}
                       for i, h in enumerate(chunk)]
            for held, why in self._batch("change_message_visibility_batch", url, chunk, entries):
                if not held.reporting:  # a message being deleted may already be gone: no news
                    logger.warning(f"could not extend a message's visibility: {why}",
                                   extra={"task_id": held.message.task_id})

    # ------------------------------------------------------------------------------ settling
    def delete(self, held: Held) -> None:
        """Delete the message of a task DynamoDB knows the fate of (sent within the linger).

        Never raises. A delete that fails, even after a retry, is only logged: the message comes
        back after its visibility timeout and the next agent's claim, a conditional write on the
        task's status, finds nothing to run and deletes it then; a harmless redelivery.
        """
        self._settle(Settle.DELETE, held)

    def make_visible(self, held: Held) -> None:
        """Give the message back: visible again at once, for the next claim to decide."""
        self._settle(Settle.RETURN, held)

    def pending(self) -> int:
        """Messages not settled yet: waiting for their batch, or in a call under way."""
        with self._lock:
            return self._sending + sum(len(v) for v in self._pending.values())

    def start(self) -> None:
        """Start the thread that sends lingering batches."""
        self._flusher = threading.Thread(target=self._flush_loop, name="settle", daemon=True)
        self._flusher.start()

    def close(self) -> None:
        """Send everything pending and stop the flusher; later settles are sent at once."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._flusher is not None:
            self._flusher.join(10.0)
        self.flush()

    def flush(self, *, due_only: bool = False) -> None:
        """Send every pending settle now (with ``due_only``, those that lingered long enough)."""
        now = time.monotonic()
        with self._lock:
            keys = [k for k in self._pending if not due_only or now - self._since[k] >= self._linger[k[0]]]
            batches = {k: self._pending.pop(k) for k in keys}
            for k in keys:
                del self._since[k]
            self._sending += sum(len(v) for v in batches.values())
        for (kind, url), helds in batches.items():
            self._send(kind, url, helds)

    def _settle(self, kind: Settle, held: Held) -> None:
        key = (kind, held.queue_url)
        with self._lock:
            group = self._pending.setdefault(key, [])
            self._since.setdefault(key, time.monotonic())
            group.append(held)
            full = len(group) >= MAX_RECEIVE or self._closed
            if full:
                del self._pending[key], self._since[key]
                self._sending += len(group)
        if full:
            self._send(kind, held.queue_url, group)

    def _flush_loop(self) -> None:
        tick = min(self._linger.values()) / 2
        while True:
            with self._lock:
                if self._closed:
                    return
                self._lock.wait(tick)
            self.flush(due_only=True)

    def _send(self, kind: Settle, url: str, helds: Sequence[Held]) -> None:
        """One settle batch; entries refused for a transient reason are retried once, the rest
        logged (harmless: see the module docstring)."""
        try:
            self._send_chunks(kind, url, helds)
        finally:
            with self._lock:
                self._sending -= len(helds)

    def _send_chunks(self, kind: Settle, url: str, helds: Sequence[Held]) -> None:
        op = "delete_message_batch" if kind is Settle.DELETE else "change_message_visibility_batch"
        for _, chunk in _chunks(helds):
            entries: list[dict[str, Any]] = [{"Id": str(i), "ReceiptHandle": h.receipt} for i, h in enumerate(chunk)]
            if kind is Settle.RETURN:
                for e in entries:
                    e["VisibilityTimeout"] = 0
            failed = self._batch(op, url, chunk, entries, retry=True)
            for held, why in failed:
                what = "delete a finished message" if kind is Settle.DELETE else "make a message visible again"
                then = "it comes back later and the next claim discards it" if kind is Settle.DELETE \
                    else "it comes back at the end of its visibility timeout instead"
                logger.warning(f"could not {what} ({why}): {then}", extra={"task_id": held.message.task_id})

    def _batch(self, op: str, url: str, chunk: Sequence[Held], entries: list[dict[str, Any]], *,
               retry: bool = False) -> list[tuple[Held, str]]:
        """Call ``op`` with ``entries`` (one per held message); the entries that failed, and why.

        With ``retry``, entries SQS refused for its own reasons (not ``SenderFault``) are sent
        once more; a sender fault (an expired receipt handle) would only fail again.
        """
        call = getattr(self._sqs, op)
        try:
            resp = call(QueueUrl=url, Entries=entries)
        except Exception as exc:  # boto3 already retried: give up on this batch
            return [(h, str(exc)) for h in chunk]
        failures = list(resp.get("Failed", []))
        if retry:
            again = [f for f in failures if not f.get("SenderFault")]
            if again:
                by_id = {e["Id"]: e for e in entries}
                failures = [f for f in failures if f.get("SenderFault")]
                try:
                    resp = call(QueueUrl=url, Entries=[by_id[f["Id"]] for f in again])
                    failures += list(resp.get("Failed", []))
                except Exception as exc:
                    failures += [{"Id": f["Id"], "Message": str(exc)} for f in again]
        return [(chunk[int(f["Id"])], str(f.get("Message") or f.get("Code") or "refused")) for f in failures]


def _chunks(helds: Sequence[Held]) -> list[tuple[str, list[Held]]]:
    """``helds`` by queue, in chunks of at most 10: the most one batch call takes."""
    by_queue: dict[str, list[Held]] = {}
    for held in helds:
        by_queue.setdefault(held.queue_url, []).append(held)
    return [(url, group[i:i + MAX_RECEIVE]) for url, group in by_queue.items()
            for i in range(0, len(group), MAX_RECEIVE)]
