"""The emulator's patches to moto's SQS: queue state changed one request at a time, and without
walking the whole queue for what one message needs.

moto serves each request on its own gunicorn thread, and its SQS queue is a plain list that requests
change without a lock: a delete builds the list without its message and then puts it in place of
the old one, so a send appended to the old list meanwhile is lost, and two deletes at once undo one
another (the message comes back after its visibility timeout). Under a 10,000-message backlog a
delete walks long enough for either to happen a few times per run: a task's message vanished (its
task waited for the sweeper's re-send, minutes later) and hundreds of finished tasks' messages came
back. On AWS a sent message is stored and a deleted one stays deleted. :func:`_one_at_a_time` runs
every request that reads or changes a queue's messages under that queue's own lock (the condition
moto's long polls wait on, so a long poll lets the others in while it waits).

moto also finds a message by its receipt handle by asking every message of the queue whether it
ever had that handle (a delete walked the whole backlog twice); :func:`_delete_message` keeps the
handles it hands out in :data:`_by_receipt` instead. And it reads single queue attributes (the
retention period per message received, content-based deduplication per message sent) through the
property that computes all of them, approximate counts included, each a walk of the queue:
:func:`_without_counts` turns the counts off for sends and receives, :func:`_visible_now` finds
the visible messages as a receive takes them (one reading of the clock, no list of the whole
backlog), and :func:`_retained` reads the retention period alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from moto.core.utils import unix_time, unix_time_millis
from moto.sqs.models import Message, Queue, SQSBackend

_R = TypeVar("_R")

_counts_off = threading.local()
_COUNTS = ("approximate_number_of_messages", "approximate_number_of_messages_delayed",
           "approximate_number_of_messages_not_visible")
#: The message each receipt handle was given to, until the message is deleted (all its handles go).
_by_receipt: dict[str, Message] = {}

_moto_mark_received = Message.mark_received
_moto_delete_message = Queue.delete_message
_moto_purge_queue = SQSBackend.purge_queue


class _Visible:
    """A queue's visible, not delayed messages as of one reading of the clock, found as they are
    iterated: a receive stops at the ``count`` it wants instead of listing the whole backlog
    first (a walk of 10,000 messages per receive). ``len`` and truth (moto's counts, its long poll's
    wait) look as far as they must."""

    def __init__(self, queue: Queue) -> None:
        self._messages = queue._messages
        self._now = unix_time_millis()

    def __iter__(self) -> Iterator[Message]:
        now = self._now
        return (m for m in self._messages if m.visible_at < now and m.delayed_until <= now)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return any(True for _ in self)


def _visible_now(self: Queue) -> _Visible:
    """The visible, not delayed messages (:class:`_Visible`)."""
    return _Visible(self)


def _count_unless_off(count: property) -> property:
    def get(self: Queue) -> int:
        return 0 if getattr(_counts_off, "active", False) else int(count.fget(self))  # type: ignore[misc]

    return property(get)


def _without_counts(call: Callable[..., _R]) -> Callable[..., _R]:
    """``call`` with the queue's message counts reading 0 (see the module docstring)."""

    def wrapped(self: SQSBackend, *args: Any, **kwargs: Any) -> _R:
        _counts_off.active = True
        try:
            return call(self, *args, **kwargs)
        finally:
            _counts_off.active = False

    return wrapped


def _one_at_a_time(call: Callable[..., _R]) -> Callable[..., _R]:
    """``call`` (a backend method whose first argument is the queue's name) holding the queue's
    lock. The lock is moto's own reentrant condition: a long poll's wait releases it."""

    def wrapped(self: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> _R:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            return call(self, queue_name, *args, **kwargs)

    return wrapped


def _mark_received(self: Message, visibility_timeout: int | None = None) -> None:
    _moto_mark_received(self, visibility_timeout)
    if self.receipt_handle is not None:
        _by_receipt[self.receipt_handle] = self


def _delete_message(self: Queue, receipt_handle: str) -> None:
    """moto's delete, finding the message by its handle rather than by asking every message."""
    message = _by_receipt.get(receipt_handle)
    if message is None or receipt_handle in self.deleted_messages:
        _moto_delete_message(self, receipt_handle)  # moto's answer: deleted already, or no such handle
        return
    try:
        self._messages.remove(message)  # by identity: moto's Message has no equality of its own
    except ValueError:
        _moto_delete_message(self, receipt_handle)  # a handle of another queue's message
        return
    self.pending_messages.discard(message)
    handles = [h for h in message.all_receipt_handles if h is not None]
    self.deleted_messages.update(handles)
    for handle in handles:
        _by_receipt.pop(handle, None)


def _retained(self: SQSBackend, queue_name: str, message: Message) -> bool:
    """moto's retention check of each message received, reading the one attribute it needs rather
    than building the whole attribute map three times."""
    retention = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
    return retention + message.sent_timestamp / 1000 > unix_time()  # type: ignore[operator]


def _purge_queue(self: SQSBackend, queue_name: str) -> None:
    queue = self.get_queue(queue_name)
    purged = list(queue._messages)
    _moto_purge_queue(self, queue_name)
    for message in purged:
        for handle in message.all_receipt_handles:
            if handle is not None:
                _by_receipt.pop(handle, None)


def install() -> None:
    """Patch moto's SQS (once: the emulator imports this module's installer at start)."""
    if Queue.delete_message is _delete_message:
        return
    Queue.messages = property(_visible_now)  # type: ignore[assignment,method-assign]
    for name in _COUNTS:
        setattr(Queue, name, _count_unless_off(getattr(Queue, name)))
    Message.mark_received = _mark_received  # type: ignore[method-assign]
    Queue.delete_message = _delete_message  # type: ignore[method-assign]
    SQSBackend.purge_queue = _purge_queue  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = _retained  # type: ignore[method-assign]
    SQSBackend.send_message = _one_at_a_time(_without_counts(SQSBackend.send_message))  # type: ignore[method-assign]
    SQSBackend.receive_message = _one_at_a_time(  # type: ignore[method-assign]
        _without_counts(SQSBackend.receive_message))
    for name in ("send_message_batch", "delete_message", "change_message_visibility", "purge_queue"):
        setattr(SQSBackend, name, _one_at_a_time(getattr(SQSBackend, name)))
