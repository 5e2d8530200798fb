"""The events feed of a session: tasks and results reaching a state, after a cursor, oldest first.

Built from the tables with the existing ``by_session`` indexes (both project every attribute): one
Query per table, filtered on the time an item last changed (``updated_at`` of a task; ``completed_at``
or ``created_at`` of a result). The cost is a read of the session's index partitions per call; a
``(session_id, updated_at)`` index would make it proportional to the changes instead, if sessions
grow large enough to need it.

The cursor is ``(at, kind, id)`` of the last event delivered, so events written in the same
instant are neither repeated nor skipped. Two things could still make a reader miss a change: a GSI
is eventually consistent, and writers' clocks differ a little. Both are covered by a *settle
horizon*: events younger than :data:`SETTLE_SECONDS` are held back until the next call, by which time
they are visible in the index and nothing older can still appear.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable

from skyloom.core import clock
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.protocol_queries import Event, EventsPage
from skyloom.core.sessions import load_session
from skyloom.errors import InvalidRequest

#: How long a change waits before it is delivered (GSI propagation and clock skew between writers).
SETTLE_SECONDS = 1.0

Cursor = tuple[float, str, str]
_START: Cursor = (0.0, "", "")


def encode_cursor(c: Cursor) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(c), separators=(",", ":")).encode()).decode("ascii")


def decode_cursor(text: str | None) -> Cursor:
    if not text:
        return _START
    try:
        at, kind, oid = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
        return float(at), str(kind), str(oid)
    except (binascii.Error, ValueError, TypeError, UnicodeError):
        raise InvalidRequest("the events cursor is not one this API issued", field="after") from None


def _task_events(session_id: str, since: float) -> Iterable[Event]:
    for t in TaskModel.by_session.query(session_id, filter_condition=TaskModel.updated_at >= since):
        yield Event(kind="task", id=t.task_id, status=t.status, at=float(t.updated_at), handler=t.handler,
                    partition=t.partition)


def _result_events(session_id: str, since: float) -> Iterable[Event]:
    changed = (ResultModel.completed_at >= since) | (ResultModel.created_at >= since)
    for r in ResultModel.by_session.query(session_id, filter_condition=changed):
        at = r.completed_at if r.completed_at is not None else r.created_at
        yield Event(kind="result", id=r.result_id, status=r.status, at=float(at), owner_task_id=r.owner_task_id)


def session_events(owner: str, session_id: str, after: str | None, limit: int) -> EventsPage:
    """Changes after the cursor ``after`` (from the start when absent), at most ``limit``."""
    load_session(owner, session_id)
    cursor = decode_cursor(after)
    horizon = clock.now() - SETTLE_SECONDS
    found = [
        e
        for e in (*_task_events(session_id, cursor[0]), *_result_events(session_id, cursor[0]))
        if (e.at, e.kind, e.id) > cursor and e.at <= horizon
    ]
    found.sort(key=lambda e: (e.at, e.kind, e.id))
    page = found[:limit]
    last = (page[-1].at, page[-1].kind, page[-1].id) if page else cursor
    return EventsPage(events=page, cursor=encode_cursor(last), more=len(found) > limit)
