"""The agent's SQS calls (:class:`fargate_worker.messages.Mailbox`): settles are batched by queue,
10 entries per call at most, and an entry SQS refuses is retried (transient) or logged (harmless)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from skyloom.core.dispatching import TaskMessage
from skyloom_server.fargate_worker.messages import Held, Mailbox

pytestmark = pytest.mark.timeout(30)


class RecordingSqs:
    """Records batch calls; ``refuse`` maps a receipt to the failures it gets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.refuse: dict[str, list[dict[str, Any]]] = {}
        self.raise_next = 0

    def _batch(self, op: str, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append((op, QueueUrl, [e["ReceiptHandle"] for e in Entries]))
        if self.raise_next:
            self.raise_next -= 1
            raise ConnectionError("injected")
        failed = []
        for e in Entries:
            pending = self.refuse.get(e["ReceiptHandle"])
            if pending:
                failed.append({"Id": e["Id"], **pending.pop(0)})
        return {"Successful": [], "Failed": failed}

    def delete_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        return self._batch("delete", QueueUrl, Entries)

    def change_message_visibility_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert all(e["VisibilityTimeout"] in (0, 30) for e in Entries)
        return self._batch(f"visibility-{Entries[0]['VisibilityTimeout']}", QueueUrl, Entries)


def held(receipt: str, url: str = "q1") -> Held:
    return Held(url, receipt, TaskMessage(f"t-{receipt}", "s", "default", 0), next_beat=0.0)


def mailbox(sqs: RecordingSqs, linger: float = 60.0) -> Mailbox:
    return Mailbox(sqs, visibility_timeout=30, beat_every=10.0, count=lambda _: None, delete_linger=linger,
                   return_linger=linger)


def test_deletes_linger_and_share_one_call_per_queue() -> None:
    sqs = RecordingSqs()
    box = mailbox(sqs)
    for r in ("a", "b", "c"):
        box.delete(held(r))
    box.delete(held("x", url="q2"))
    box.make_visible(held("v"))
    assert sqs.calls == [] and box.pending() == 5  # nothing sent yet: waiting for company
    box.flush()
    assert sorted(sqs.calls) == [("delete", "q1", ["a", "b", "c"]), ("delete", "q2", ["x"]),
                                 ("visibility-0", "q1", ["v"])]
    assert box.pending() == 0


def test_a_give_back_lingers_less_than_a_delete() -> None:
    # GIVEN deletes that may wait a minute and give-backs that may wait 50 ms
    sqs = RecordingSqs()
    box = Mailbox(sqs, visibility_timeout=30, beat_every=10.0, count=lambda _: None, delete_linger=60.0,
                  return_linger=0.05)
    box.start()
    box.delete(held("d"))
    box.make_visible(held("v"))
    deadline = time.monotonic() + 5
    while not sqs.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    # THEN the give-back went out on its own, and the delete still waits for company
    assert sqs.calls == [("visibility-0", "q1", ["v"])] and box.pending() == 1
    box.close()
    assert sqs.calls[-1] == ("delete", "q1", ["d"])


def test_a_full_batch_is_sent_at_once_by_the_caller() -> None:
    sqs = RecordingSqs()
    box = mailbox(sqs)
    for i in range(10):
        box.delete(held(f"r{i}"))
    assert sqs.calls == [("delete", "q1", [f"r{i}" for i in range(10)])]


def test_the_flusher_sends_within_the_linger_and_close_sends_the_rest() -> None:
    sqs = RecordingSqs()
    box = mailbox(sqs, linger=0.05)
    box.start()
    box.delete(held("a"))
    deadline = time.monotonic() + 5
    while not sqs.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sqs.calls == [("delete", "q1", ["a"])]
    box.close()
    box.delete(held("late"))  # after close: sent at once, nothing is left behind
    assert sqs.calls[-1] == ("delete", "q1", ["late"])


def test_a_transient_refusal_is_retried_once_and_a_sender_fault_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN one entry SQS refuses for its own reasons, and one whose receipt handle is stale
    sqs = RecordingSqs()
    sqs.refuse = {"busy": [{"Code": "InternalError", "SenderFault": False}],
                  "stale": [{"Code": "ReceiptHandleIsInvalid", "SenderFault": True}]}
    box = mailbox(sqs)
    for r in ("ok", "busy", "stale"):
        box.delete(held(r))
    # WHEN the batch is sent
    box.flush()
    # THEN only the transient one is sent again (and succeeds); the stale one is only logged: its
    # message comes back and the next (conditional) claim discards it
    assert sqs.calls == [("delete", "q1", ["ok", "busy", "stale"]), ("delete", "q1", ["busy"])]
    assert any("could not delete" in r.getMessage() and "ReceiptHandleIsInvalid" in r.getMessage()
               for r in caplog.records)


def test_a_failed_call_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    sqs = RecordingSqs()
    sqs.raise_next = 1
    box = mailbox(sqs)
    box.make_visible(held("a"))
    box.flush()  # does not raise: the message comes back at the end of its visibility timeout
    assert any("could not make a message visible" in r.getMessage() for r in caplog.records)


def test_extend_batches_by_queue_and_ignores_messages_being_settled(caplog: pytest.LogCaptureFixture) -> None:
    sqs = RecordingSqs()
    sqs.refuse = {"gone": [{"Code": "ReceiptHandleIsInvalid", "SenderFault": True}]}
    box = mailbox(sqs)
    gone = held("gone")
    gone.reporting = True  # being deleted: its refusal is no news
    box.extend([held(f"r{i}") for i in range(12)] + [gone])
    assert [(op, len(r)) for op, _, r in sqs.calls] == [("visibility-30", 10), ("visibility-30", 3)]
    assert not any("could not extend" in r.getMessage() for r in caplog.records)
