"""Sessions: ownership and lifecycle. Every route loads the session through :func:`load_session`,
which is where isolation between identities is enforced (invariant 6)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError

from skyloom.core import access, clock
from skyloom.core.config import Settings
from skyloom.core.ddb import update_if
from skyloom.core.models import SessionModel
from skyloom.core.protocol import CreateSessionRequest, SessionInfo
from skyloom.core.states import SessionStatus
from skyloom.core.transitions import session_move
from skyloom.errors import Conflict, InvalidRequest, NotFound, SessionNotFound
from skyloom.options import TaskOptions


def session_info(s: SessionModel) -> SessionInfo:
    return SessionInfo(
        session_id=s.session_id,
        status=s.status,
        owner=s.owner,
        name=s.name,
        options=TaskOptions(**(s.options or {})),
        partitions=list(s.partitions or []),
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


def create_session(settings: Settings, owner: str, req: CreateSessionRequest) -> SessionInfo:
    partitions = req.partitions or [settings.default_partition]
    for i, p in enumerate(partitions):
        if settings.partition(p) is None:
            known = ", ".join(x.name for x in settings.partitions)
            raise InvalidRequest(f"unknown partition {p!r} (known: {known})", field=f"partitions.{i}")
    if len(set(partitions)) != len(partitions):
        raise InvalidRequest("a partition is listed twice", field="partitions")
    for i, p in enumerate(partitions):
        # Refused here too, not only at submission, so a session never lists a fleet its owner
        # cannot use (the caller learns at once, not at the first submit).
        spec = settings.partition(p)
        if spec is not None:
            access.require_identity(spec, owner, f"partitions.{i}")
    if req.options.partition is not None and req.options.partition not in partitions:
        raise InvalidRequest(
            f"default partition {req.options.partition!r} is not one of the session's partitions",
            field="options.partition",
        )
    now = clock.now()
    s = SessionModel(
        session_id=clock.new_id(),
        owner=owner,
        status=SessionStatus.RUNNING.value,
        created_at=now,
        updated_at=now,
        options=req.options.compact(),
        partitions=partitions,
        name=req.name,
    )
    try:
        s.save(condition=SessionModel.session_id.does_not_exist())
    except PutError as exc:  # a uuid4 collision: astronomically unlikely, but never overwrite
        raise Conflict("session id collision, retry") from exc
    return session_info(s)


def load_session(owner: str, session_id: str) -> SessionModel:
    """The session if it exists and belongs to ``owner``; otherwise SessionNotFound.

    Another identity's session is reported exactly like a missing one, so ids cannot be probed.
    """
    try:
        s = SessionModel.get(session_id, consistent_read=True)
    except DoesNotExist:
        s = None
    return owned_session(s, owner, session_id)


def owned_session(s: SessionModel | None, owner: str, session_id: str) -> SessionModel:
    """``s``, read for ``session_id``, if it is ``owner``'s and not deleted; otherwise SessionNotFound."""
    if s is None or s.owner != owner or s.status == SessionStatus.DELETED.value:
        raise SessionNotFound(f"session {session_id} not found", field="session_id")
    return s


_status_cache: dict[str, tuple[float, str | None]] = {}
STATUS_TTL_SECONDS = 2.0


def cached_status(session_id: str, ttl: float = STATUS_TTL_SECONDS) -> str | None:
    """A session's status as seen at most ``ttl`` seconds ago (None if it does not exist).

    Workers check it before each claim; caching keeps that to one read per session per agent every
    couple of seconds. Pausing therefore takes effect within ``ttl``; decisions that must be exact
    re-check the status in the same transaction (see ``claims.park``).
    """
    now = time.monotonic()
    hit = _status_cache.get(session_id)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    status = _read_cached(session_id, now)[0]
    return status


_partitions_cache: dict[str, tuple[str, ...] | None] = {}


def cached_partitions(session_id: str) -> tuple[str, ...] | None:
    """A session's partitions (None if it does not exist, () for the default one). They never change
    once the session exists, so a process reads them once per session (with its status)."""
    if session_id in _partitions_cache:
        return _partitions_cache[session_id]
    return _read_cached(session_id, time.monotonic())[1]


def _read_cached(session_id: str, now: float) -> tuple[str | None, tuple[str, ...] | None]:
    try:
        session = SessionModel.get(session_id, consistent_read=True)
        status: str | None = session.status
        partitions: tuple[str, ...] | None = tuple(session.partitions or ())
    except DoesNotExist:
        status, partitions = None, None
    if len(_status_cache) > 10_000:
        _status_cache.clear()
        _partitions_cache.clear()
    _status_cache[session_id] = (now, status)
    if partitions is not None:
        _partitions_cache[session_id] = partitions
    return status, partitions


def require_in_session(
    session: SessionModel, wanted: list[str], found: Mapping[str, Any], error: type[NotFound], what: str, field: str
) -> None:
    """Raise ``error`` naming every id of ``wanted`` that is missing or belongs to another session.

    Ids of other sessions are reported exactly like missing ones, so nobody can probe for them.
    """
    missing = [i for i in wanted if i not in found or found[i].session_id != session.session_id]
    if missing:
        raise error(
            f"unknown {what} id(s) in session {session.session_id}: {', '.join(missing[:10])}",
            field=field,
            details={"missing": missing[:100]},
        )


def get_session(settings: Settings, owner: str, session_id: str) -> SessionInfo:
    return session_info(load_session(owner, session_id))


def transition_session(owner: str, session_id: str, target: SessionStatus) -> SessionModel:
    """Move a session to ``target`` with a conditional write; repeating a done transition is a no-op."""
    s = load_session(owner, session_id)
    if s.status == target.value:
        return s
    move = session_move(None, target)
    moved = update_if(
        s,
        [move.set, SessionModel.updated_at.set(clock.now())],
        move.guard & (SessionModel.owner == owner),
    )
    if not moved:
        current = load_session(owner, session_id)
        if current.status == target.value:
            return current
        raise Conflict(
            f"session {session_id} is {current.status}; it cannot become {target.value}",
            field="session_id",
            details={"status": current.status},
        )
    return s


def close_session(settings: Settings, owner: str, session_id: str) -> SessionInfo:
    return session_info(transition_session(owner, session_id, SessionStatus.CLOSED))
