"""The events feed of a session: tasks and results reaching a state, after a cursor, oldest first.

Read from the ``by_change`` indexes, ``(session_id, updated_at)`` on both tables: one range Query
per table starting at the cursor's time, so a call costs what changed since, not the session's size.
Every write that changes a task or a result sets its ``updated_at``; an item updated again moves
forward in the index and is delivered again, in its newer state.

The cursor is ``(at, kind, id)`` of the last event delivered. Items written in the same instant
(a transaction stamps all its items alike) are ordered by kind and id; because an index returns
equal keys in no particular order, a read always takes the whole group of items sharing the
boundary time, so a page never cuts a group at a point the next call could not find again.

Two things could still make a reader miss a change: a GSI is eventually consistent, and writers'
clocks differ a little. Both are covered by a *settle horizon*: changes younger than
:data:`SETTLE_SECONDS` are not covered by the cursor yet. They are returned aside as ``recent`` for
readers that want them at once (a client waiting for a result), and again as events once settled.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator
from typing import Any

from skyloom.core import clock
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.protocol_queries import SETTLE_SECONDS, Event, EventsPage
from skyloom.core.sessions import load_session
from skyloom.errors import InvalidRequest

Cursor = tuple[float, str, str]
_START: Cursor = (0.0, "", "")


def encode_cursor(c: Cursor) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(c), separators=(",", ":")).encode()).decode("ascii")


def decode_cursor(text: str | None) -> Cursor:
    if not text:
        return _START
    try:
        at, kind, oid = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
        cursor = float(at), str(kind), str(oid)
    except (binascii.Error, ValueError, TypeError, UnicodeError, OverflowError):
        # OverflowError: an integer too large for a float (a forged cursor) is the caller's error.
        raise InvalidRequest("the events cursor is not one this API issued", field="after") from None
    if not math.isfinite(cursor[0]):  # json accepts NaN/Infinity; no cursor we issue holds one
        raise InvalidRequest("the events cursor is not one this API issued", field="after")
    return cursor


def _key(e: Event) -> Cursor:
    return (e.at, e.kind, e.id)


#: What an event says, read from the index and no more: a page is up to a thousand items per table,
#: and whole task items (payload, attempts, tracebacks) cost far more to read, send and parse.
TASK_EVENT_ATTRIBUTES = ["task_id", "session_id", "status", "updated_at", "handler", "label", "partition"]
RESULT_EVENT_ATTRIBUTES = ["result_id", "session_id", "status", "updated_at", "owner_task_id"]


def _task_event(t: TaskModel) -> Event:
    return Event(kind="task", id=t.task_id, status=t.status, at=float(t.updated_at), handler=t.handler,
                 label=t.label, partition=t.partition)


def _result_event(r: ResultModel) -> Event:
    return Event(kind="result", id=r.result_id, status=r.status, at=float(r.updated_at),
                 owner_task_id=r.owner_task_id)


def _read(items: Iterator[Any], to_event: Any, cursor: Cursor, want: int) -> list[Event]:
    """Events after ``cursor`` from one index, in index order: at least ``want`` when there are,
    plus every item sharing the last one's time (ties are sorted by the caller, never split).

    An item updated while the query pages can be read twice, at its old time and its new one; the
    newer read wins, so one call never returns an object twice.
    """
    latest: dict[str, Event] = {}
    count = 0
    boundary: float | None = None
    for item in items:
        e: Event = to_event(item)
        if boundary is not None and e.at > boundary:
            break
        if _key(e) <= cursor:
            continue
        if e.id not in latest:
            count += 1
        if e.id not in latest or e.at >= latest[e.id].at:
            latest[e.id] = e
        if count >= want and boundary is None:
            boundary = e.at
    return list(latest.values())


def session_events(owner: str, session_id: str, after: str | None, limit: int) -> EventsPage:
    """Changes after the cursor ``after`` (from the start when absent), at most ``limit``.

    Settled changes come as ``events`` and advance the cursor; when they are drained, the unsettled
    ones that fit in ``limit`` come as ``recent``.
    """
    load_session(owner, session_id)
    cursor = decode_cursor(after)
    page_size = min(limit + 1, 1000)
    tasks = TaskModel.by_change.query(session_id, TaskModel.updated_at >= cursor[0], page_size=page_size,
                                      attributes_to_get=TASK_EVENT_ATTRIBUTES)
    results = ResultModel.by_change.query(session_id, ResultModel.updated_at >= cursor[0], page_size=page_size,
                                          attributes_to_get=RESULT_EVENT_ATTRIBUTES)
    found = _read(tasks, _task_event, cursor, limit + 1) + _read(results, _result_event, cursor, limit + 1)
    found.sort(key=_key)
    horizon = clock.now() - SETTLE_SECONDS
    head = found[:limit]
    settled = [e for e in head if e.at <= horizon]
    recent = head[len(settled):]
    last = _key(settled[-1]) if settled else cursor
    return EventsPage(events=settled, cursor=encode_cursor(last), more=len(settled) == limit < len(found),
                      recent=recent)
