"""Listing sessions, tasks and results: filters, and pagination over the tables' indexes.

Every listing is one DynamoDB Query on an existing index, never a Scan: sessions by owner
(``by_owner``, newest first), tasks and results by session (``by_session``). Filters the index key
cannot express (status, handler, partition, creation time of tasks and results) are
FilterExpressions, so they cost the read of what they discard; that is fine for the CLI's use and
keeps the table layout unchanged.

The ``next`` token is the Query's LastEvaluatedKey as base64 JSON. It is checked against the
listing it continues (same owner or session) before use: a token is opaque, not trusted.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from pynamodb.expressions.condition import Condition

from skyloom.core.models import ResultModel, SessionModel, TaskModel
from skyloom.core.protocol_queries import MAX_PAGE_SIZE, ResultsPage, SessionsPage, TasksPage
from skyloom.core.results import result_info
from skyloom.core.sessions import load_session, session_info
from skyloom.core.states import ResultStatus, SessionStatus, TaskStatus
from skyloom.core.tasks import task_info
from skyloom.errors import InvalidRequest


@dataclass(frozen=True)
class Filters:
    """What a listing keeps; ``None``/empty means "any". Times are epoch seconds, bounds exclusive."""

    statuses: tuple[str, ...] = ()
    handler: str | None = None
    partition: str | None = None
    parent: str | None = None
    created_after: float | None = None
    created_before: float | None = None

    def __post_init__(self) -> None:
        # A query string parses "nan" and "inf" as floats; NaN in a DynamoDB key condition is a
        # server-side failure (500), and neither means a time, so both are the caller's 400.
        for name in ("created_after", "created_before"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidRequest(f"{name} must be a finite epoch time in seconds, not {value}", field=name)


def parse_statuses(text: str | None, allowed: type[TaskStatus] | type[ResultStatus] | type[SessionStatus]) -> tuple[
    str, ...
]:
    """``"Completed,Error"`` -> the statuses, checked against the enum so a typo is a 400, not an
    empty listing. Matching ignores case (``error`` works) and answers the canonical spelling."""
    if not text:
        return ()
    by_lower = {s.value.lower(): s.value for s in allowed}
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() not in by_lower:
            known = ", ".join(s.value for s in allowed)
            raise InvalidRequest(f"unknown status {part!r} (known: {known})", field="status")
        out.append(by_lower[part.lower()])
    return tuple(dict.fromkeys(out))


def check_limit(limit: int | None, default: int, maximum: int = MAX_PAGE_SIZE) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise InvalidRequest(f"limit must be between 1 and {maximum}", field="limit")
    return limit


# ------------------------------------------------------------------------------------- tokens
def encode_token(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_token(token: str | None, hash_name: str, hash_value: str) -> dict[str, Any] | None:
    """The LastEvaluatedKey inside ``token``, if it continues a listing of ``hash_value``."""
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError):
        raise InvalidRequest("the pagination token is not one this API issued", field="next") from None
    if not isinstance(key, dict) or key.get(hash_name) != {"S": hash_value}:
        raise InvalidRequest("the pagination token belongs to another listing", field="next")
    return key


# ----------------------------------------------------------------------------------- listings
def _and(conditions: list[Condition]) -> Condition | None:
    out: Condition | None = None
    for c in conditions:
        out = c if out is None else out & c
    return out


def list_sessions(owner: str, filters: Filters, limit: int, token: str | None) -> SessionsPage:
    """The owner's sessions, newest first. Deleted sessions are gone for their owner too."""
    conditions: list[Condition] = [SessionModel.status != SessionStatus.DELETED.value]
    if filters.statuses:
        conditions.append(SessionModel.status.is_in(*filters.statuses))
    rng: Condition | None = None
    if filters.created_after is not None and filters.created_before is not None:
        rng = SessionModel.created_at.between(filters.created_after, filters.created_before)
        conditions += [SessionModel.created_at != filters.created_after,
                       SessionModel.created_at != filters.created_before]
    elif filters.created_after is not None:
        rng = SessionModel.created_at > filters.created_after
    elif filters.created_before is not None:
        rng = SessionModel.created_at < filters.created_before
    it = SessionModel.by_owner.query(
        owner,
        range_key_condition=rng,
        filter_condition=_and(conditions),
        scan_index_forward=False,
        limit=limit,
        page_size=max(limit, 100),
        last_evaluated_key=decode_token(token, "owner", owner),
    )
    items = [session_info(s) for s in it]
    return SessionsPage(sessions=items, next=encode_token(it.last_evaluated_key) if len(items) >= limit else None)


def _common(model: type[TaskModel] | type[ResultModel], filters: Filters) -> list[Condition]:
    conditions: list[Condition] = []
    if filters.statuses:
        conditions.append(model.status.is_in(*filters.statuses))
    if filters.created_after is not None:
        conditions.append(model.created_at > filters.created_after)
    if filters.created_before is not None:
        conditions.append(model.created_at < filters.created_before)
    return conditions


def list_tasks(owner: str, session_id: str, filters: Filters, limit: int, token: str | None) -> TasksPage:
    """A page of the session's tasks (index order: by task id, which is random, not by time)."""
    load_session(owner, session_id)
    conditions = _common(TaskModel, filters)
    if filters.handler:
        # A handler, or the label naming the function that a skyloom.call task runs.
        conditions.append((TaskModel.handler == filters.handler) | (TaskModel.label == filters.handler))
    if filters.partition:
        conditions.append(TaskModel.partition == filters.partition)
    if filters.parent:
        conditions.append(TaskModel.parent_task_id == filters.parent)
    it = TaskModel.by_session.query(
        session_id,
        filter_condition=_and(conditions),
        limit=limit,
        page_size=max(limit, 100),
        last_evaluated_key=decode_token(token, "session_id", session_id),
    )
    items = [task_info(t) for t in it]
    return TasksPage(tasks=items, next=encode_token(it.last_evaluated_key) if len(items) >= limit else None)


def list_results(owner: str, session_id: str, filters: Filters, limit: int, token: str | None) -> ResultsPage:
    """A page of the session's results; ``handler`` and ``partition`` do not apply to results."""
    load_session(owner, session_id)
    if filters.handler or filters.partition or filters.parent:
        raise InvalidRequest("results have no handler, partition or parent to filter on", field="handler")
    it = ResultModel.by_session.query(
        session_id,
        filter_condition=_and(_common(ResultModel, filters)),
        limit=limit,
        page_size=max(limit, 100),
        last_evaluated_key=decode_token(token, "session_id", session_id),
    )
    items = [result_info(r) for r in it]
    return ResultsPage(results=items, next=encode_token(it.last_evaluated_key) if len(items) >= limit else None)
