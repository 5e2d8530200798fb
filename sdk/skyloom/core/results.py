"""Results (data nodes): creation, upload, reads and waits.

A result is written at most once: the Created -> Completed write is conditional, and its value is
either inline (small) or an S3 key recorded by the same write, so readers only ever see one value.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from pynamodb.exceptions import DoesNotExist

from skyloom.core import blobs, clock, ddb
from skyloom.core.config import Settings
from skyloom.core.ddb import put_new, transact_idempotent, update_if
from skyloom.core.graph import check_unique
from skyloom.core.models import ResultModel, SessionModel
from skyloom.core.protocol import (
    ResultData,
    ResultError,
    ResultInfo,
    ResultSpec,
    WaitRequest,
    WaitResponse,
    b64decode,
    b64encode,
)
from skyloom.core.sessions import load_session, owned_session, require_in_session
from skyloom.core.states import RESULT_FINAL, ResultStatus, SessionStatus, session_accepts_submissions
from skyloom.core.transitions import result_move
from skyloom.errors import Conflict, InvalidRequest, PayloadTooLarge, ResultNotFound, SessionClosed

UPLOAD_WRITER = "upload"


def fingerprint(body: BaseModel | Sequence[BaseModel], session: SessionModel) -> str:
    """Identifies a request by content and target, so a retried request is recognised as applied.

    The session and owner are part of it: the same body replayed by another identity into another
    session is a conflict, never a "replay" that would report writes that did not happen.
    """
    h = hashlib.sha256(f"{session.owner}\n{session.session_id}\n".encode())
    for part in [body] if isinstance(body, BaseModel) else body:
        h.update(part.model_dump_json().encode())
    return h.hexdigest()[:32]


def result_info(r: ResultModel, upload_url: str | None = None) -> ResultInfo:
    return ResultInfo(
        result_id=r.result_id,
        session_id=r.session_id,
        status=r.status,
        name=r.name,
        owner_task_id=r.owner_task_id,
        size=int(r.size) if r.size is not None else None,
        created_at=r.created_at,
        completed_at=r.completed_at,
        error=ResultError(**r.error) if r.error else None,
        upload_url=upload_url,
    )


def require_open(session: SessionModel) -> None:
    if not session_accepts_submissions(SessionStatus(session.status)):
        raise SessionClosed(
            f"session {session.session_id} is {session.status} and accepts no new work",
            field="session_id",
            details={"status": session.status},
        )


def new_result_items(
    settings: Settings, session: SessionModel, specs: Sequence[ResultSpec], request_id: str, field: str
) -> tuple[list[ResultModel], dict[str, str]]:
    """Result items to create for ``specs`` (not yet written), and presigned upload URLs by id."""
    now = clock.now()
    items: list[ResultModel] = []
    urls: dict[str, str] = {}
    for i, spec in enumerate(specs):
        rid = spec.id or clock.new_id()
        r = ResultModel(
            result_id=rid,
            session_id=session.session_id,
            owner=session.owner,
            status=ResultStatus.CREATED.value,
            name=spec.name,
            created_at=now,
            updated_at=now,
            request_id=request_id,
            has_dependents=False,
        )
        if spec.data is not None:
            if spec.upload:
                raise InvalidRequest("a result is either uploaded inline (data) or by URL (upload), not both",
                                     field=f"{field}.{i}.upload")
            data = b64decode(spec.data, f"{field}.{i}.data")
            if len(data) > settings.inline_max_bytes:
                raise PayloadTooLarge(
                    f"inline data of {len(data)} bytes exceeds the {settings.inline_max_bytes}-byte "
                    "inline limit; create the result with upload=true and PUT it to the returned URL",
                    field=f"{field}.{i}.data",
                    details={"limit": settings.inline_max_bytes, "size": len(data)},
                )
            r.status = ResultStatus.COMPLETED.value
            r.inline = data
            r.size = len(data)
            r.completed_at = now
        elif spec.upload:
            r.s3_key = blobs.result_key(session.session_id, rid, UPLOAD_WRITER)
            urls[rid] = blobs.presign_put(settings, r.s3_key)
        items.append(r)
    return items, urls


def replayed(model: type[ResultModel], key: str, request_id: str, session_id: str) -> bool:
    """True if the item exists because this very request was applied before."""
    try:
        existing = model.get(key, consistent_read=True)
    except DoesNotExist:
        return False
    return existing.request_id == request_id and existing.session_id == session_id


def create_results(settings: Settings, owner: str, session_id: str, specs: list[ResultSpec]) -> list[ResultInfo]:
    session = load_session(owner, session_id)
    require_open(session)
    request_id = fingerprint(specs, session)
    items, urls = new_result_items(settings, session, specs, request_id, "results")
    check_unique([r.result_id for r in items], "results")

    def done(i: int) -> bool:
        if replayed(ResultModel, items[i].result_id, request_id, session.session_id):
            return True
        raise Conflict(f"result id {items[i].result_id} is already taken", field=f"results.{i}.id")

    transact_idempotent([put_new(r) for r in items], done)
    return [result_info(r, urls.get(r.result_id)) for r in items]


def load_session_and_results(owner: str, session_id: str, ids: Iterable[str], field: str = "ids",
                             *, require: bool = True) -> tuple[SessionModel, dict[str, ResultModel]]:
    """The owner's session and its results among ``ids`` (strongly consistent), in one read
    (:func:`ddb.batch_get`): SessionNotFound if the session is not the owner's; with ``require``,
    ResultNotFound names any id missing, else those are left out."""
    wanted = list(dict.fromkeys(ids))
    sessions: list[SessionModel]
    results: list[ResultModel]
    sessions, results = ddb.batch_get([(SessionModel, [session_id]), (ResultModel, wanted)])
    session = owned_session(sessions[0] if sessions else None, owner, session_id)
    found = {r.result_id: r for r in results if r.session_id == session.session_id}
    if require:
        require_in_session(session, wanted, found, ResultNotFound, "result", field)
    return session, found


def get_results(settings: Settings, owner: str, session_id: str, ids: list[str]) -> list[ResultInfo]:
    _, found = load_session_and_results(owner, session_id, ids)
    return [result_info(found[i]) for i in dict.fromkeys(ids)]


def complete_uploads(settings: Settings, owner: str, session_id: str, ids: list[str]) -> list[ResultInfo]:
    """Complete results the client PUT to their presigned URL, after checking each object exists."""
    _, found = load_session_and_results(owner, session_id, ids)
    # Check every id before writing any, so a refused request completes nothing (a bad id after a
    # good one used to leave the good one completed behind a 409).
    sizes: dict[str, int] = {}
    for i, rid in enumerate(dict.fromkeys(ids)):
        r = found[rid]
        if r.status == ResultStatus.COMPLETED.value and r.s3_key:
            continue
        if r.s3_key is None or r.status != ResultStatus.CREATED.value:
            raise Conflict(f"result {rid} was not created for upload (status {r.status})", field=f"ids.{i}")
        size = blobs.size(settings, r.s3_key)
        if size is None:
            raise Conflict(f"result {rid}: nothing was uploaded to its URL yet", field=f"ids.{i}")
        sizes[rid] = size
    out: list[ResultInfo] = []
    for i, rid in enumerate(dict.fromkeys(ids)):
        r = found[rid]
        if rid not in sizes:
            out.append(result_info(r))
            continue
        size = sizes[rid]
        now = clock.now()
        move = result_move(ResultStatus.CREATED, ResultStatus.COMPLETED)
        completed = update_if(
            r,
            [
                move.set,
                ResultModel.size.set(size),
                ResultModel.completed_at.set(now),
                ResultModel.updated_at.set(now),
            ],
            move.guard & ResultModel.owner_task_id.does_not_exist(),
        )
        if not completed:
            raise Conflict(f"result {rid} is produced by a task or already written", field=f"ids.{i}")
        out.append(result_info(r))
    return out


#: The server re-checks a wait after a quarter of the time it has been quiet (since the wait began or
#: a result it waits on last became final), at least :data:`RECHECK_FIRST_SECONDS` and at most
#: :data:`RECHECK_MAX_SECONDS` apart: a result that completes at once is seen at once, a stream of
#: completions is followed closely (the last one too: the wait ends within a quarter of the gap
#: before it), and a long quiet wait settles to about one check a second. An ``all`` wait also
#: waits a quarter of the time the pending results should still take at the pace they have been
#: completing (:data:`RECHECK_ETA_SHARE`): 200 tasks of 100 ms on 4 workers cannot all be done
#: before 5 s, and a check every 10 ms meanwhile cost 40 % of the CPU the whole run used. The first
#: checks come 5 ms apart: a lone short task is final about 35 ms after its submit on an idle local
#: stack, and 10 ms apart left its result waiting 5 ms on average (a quarter of its latency's
#: target); the quiet rule doubles the pause past 20 ms of quiet, so this costs a few reads per wait.
RECHECK_FIRST_SECONDS = 0.005
RECHECK_QUIET_SHARE = 0.25
RECHECK_ETA_SHARE = 0.25
RECHECK_MAX_SECONDS = 1.0
#: Pending ids an ``all`` wait re-reads per check before it stops early (it cannot end before they
#: are final): a busy wait reads few items per check.
RECHECK_EARLY_KEYS = 25
#: Bytes of values and errors in one wait answer: with the states of 1,000 results (about 0.4 MB) and
#: the escaping of the Lambda proxy answer, it stays well under Lambda's 6 MB response limit.
WAIT_ANSWER_BUDGET_BYTES = 3 * 1024 * 1024
#: Keys per BatchGetItem call (DynamoDB's limit).
_BATCH_KEYS = 100


def wait_results(settings: Settings, owner: str, session_id: str, req: WaitRequest) -> WaitResponse:
    """A bounded server-side long poll over strongly consistent reads, and a batch read of values.

    Cost, and why it is shaped so: the first check reads every id (BatchGetItem, 100 keys a call);
    each re-check reads only the ids still pending, so a wait of 1,000 ids costs at most 10 calls per
    re-check, and a result is read with its value once, when it is final. In ``all`` mode a re-check
    stops at the first 25 ids that still hold a pending one (the wait cannot end before they are
    final), so a long wait for many results costs one small call per re-check. Re-checks come a
    quarter of the quiet time apart (:func:`recheck_pause`: since the wait began, or since a result
    last became final), from 5 ms to one a second: a short task is seen within a fifth of its run,
    a stream of completions is followed closely to its last one, and a 20-s quiet wait makes about
    40 checks where a fixed fast pace would make
    hundreds; an ``all`` wait for results that complete at a steady pace checks more often as the
    last ones near, not every 5 ms from the start. The reads are the table's, not the ``by_change`` index's:
    the index is eventually consistent and would need a settle horizon and a fallback read anyway.

    The route cuts ``timeout`` to what the invocation has left, and the protocol caps it at 20 s, so
    the answer always comes well before API Gateway's 29 s integration timeout. ``also`` ids are read
    once, at the end; values and errors fill :data:`WAIT_ANSWER_BUDGET_BYTES`, the rest is listed in
    ``incomplete``.
    """
    deadline = time.monotonic() + req.timeout
    waited = list(dict.fromkeys(req.ids))
    session, found = load_session_and_results(owner, session_id, waited)
    unread: list[str] = []
    began = quiet_since = time.monotonic()
    finals = first_finals = _finals(found, waited)
    while not _wait_over(req.mode, [found[i] for i in waited]):
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            break
        rate = (finals - first_finals) / (now - began) if req.mode == "all" and now > began else 0.0
        time.sleep(min(recheck_pause(now - quiet_since, pending=len(waited) - finals, rate=rate), left))
        unread = _recheck(found, [i for i in waited if found[i].status not in RESULT_FINAL], req.mode == "all")
        if (seen := _finals(found, waited)) > finals:
            finals, quiet_since = seen, time.monotonic()
    done = _wait_over(req.mode, [found[i] for i in waited])
    if unread and not done:
        _recheck(found, [i for i in unread if found[i].status not in RESULT_FINAL], False)  # report progress
    also = _read_also(session, req.also, set(waited))
    return _wait_answer(settings, [found[i] for i in waited] + also, done=done, values=req.values)


def recheck_pause(quiet: float, *, pending: int = 0, rate: float = 0.0) -> float:
    """Seconds until the next check of a wait that has seen no result become final for ``quiet``;
    with ``rate`` (results become final per second, so far in an ``all`` wait), not before a share
    of the time the ``pending`` ones should take at that pace."""
    pause = max(quiet * RECHECK_QUIET_SHARE, RECHECK_FIRST_SECONDS)
    if rate > 0 and pending > 0:
        pause = max(pause, pending / rate * RECHECK_ETA_SHARE)
    return min(pause, RECHECK_MAX_SECONDS)


def _finals(found: dict[str, ResultModel], waited: Sequence[str]) -> int:
    return sum(1 for i in waited if found[i].status in RESULT_FINAL)


def _wait_over(mode: str, rs: Sequence[ResultModel]) -> bool:
    final = [r for r in rs if r.status in RESULT_FINAL]
    if mode == "any":
        return bool(final)
    if mode == "first_failure" and any(r.status != ResultStatus.COMPLETED.value for r in final):
        return True
    return len(final) == len(rs)


def _recheck(found: dict[str, ResultModel], pending: list[str], stop_early: bool) -> list[str]:
    """Read ``pending`` again into ``found``, 100 ids a call; returns the ids left unread.

    With ``stop_early`` the reading stops after the first call that still finds a pending result.
    """
    step = RECHECK_EARLY_KEYS if stop_early else _BATCH_KEYS
    for start in range(0, len(pending), step):
        chunk = pending[start : start + step]
        for r in ResultModel.batch_get(chunk, consistent_read=True):
            found[r.result_id] = r
        if stop_early and any(found[i].status not in RESULT_FINAL for i in chunk):
            return pending[start + step :]
    return []


def _read_also(session: SessionModel, ids: Sequence[str], skip: set[str]) -> list[ResultModel]:
    """The final results of the session among ``ids``, in order; other ids are ignored, so nothing
    is said about results of other sessions or ids not created yet."""
    wanted = [i for i in dict.fromkeys(ids) if i not in skip]
    if not wanted:
        return []
    found = {r.result_id: r for r in ResultModel.batch_get(wanted, consistent_read=True)}
    return [
        found[i] for i in wanted
        if i in found and found[i].session_id == session.session_id and found[i].status in RESULT_FINAL
    ]


def _wait_answer(settings: Settings, rs: list[ResultModel], *, done: bool, values: bool) -> WaitResponse:
    """The answer: every state, and values and errors in order while the budget lasts.

    A detail's size is known before it is built (base64 of the inline bytes, a URL's usual length),
    so values beyond the budget are never encoded or presigned.
    """
    infos: list[ResultInfo] = []
    data: list[ResultData] = []
    incomplete: list[str] = []
    spent = 0
    for r in rs:
        info = result_info(r)
        with_value = values and r.status == ResultStatus.COMPLETED.value
        cost = _detail_bytes(r, info, with_value)
        if spent and spent + cost > WAIT_ANSWER_BUDGET_BYTES:
            incomplete.append(r.result_id)
            info = info.model_copy(update={"error": None})
        else:
            spent += cost
            if with_value:
                data.append(result_data(settings, r))
        infos.append(info)
    return WaitResponse(results=infos, done=done, values=data, incomplete=incomplete)


#: What a presigned URL and a value's JSON framing take in an answer, for the budget.
_URL_BYTES = 2048
_FRAMING_BYTES = 100


def _detail_bytes(r: ResultModel, info: ResultInfo, with_value: bool) -> int:
    if info.error is not None:
        return len(info.error.model_dump_json())
    if not with_value:
        return 0
    if r.inline is not None:
        return 4 * ((len(r.inline) + 2) // 3) + _FRAMING_BYTES
    return (_URL_BYTES if r.s3_key else 0) + _FRAMING_BYTES


def result_data(settings: Settings, r: ResultModel) -> ResultData:
    """The value of a Completed result: inline (base64) when small, else a presigned download URL."""
    if r.inline is not None:
        return ResultData(result_id=r.result_id, size=len(r.inline), data=b64encode(r.inline))
    if r.s3_key is None:  # Completed with an empty inline value stored as absent
        return ResultData(result_id=r.result_id, size=0, data="")
    return ResultData(result_id=r.result_id, size=int(r.size or 0), download_url=blobs.presign_get(settings, r.s3_key))


def read_result(settings: Settings, owner: str, session_id: str, result_id: str) -> ResultData:
    _, found = load_session_and_results(owner, session_id, [result_id], field="result_id")
    r = found[result_id]
    if r.status != ResultStatus.COMPLETED.value:
        raise Conflict(
            f"result {result_id} is {r.status}, not Completed",
            field="result_id",
            details={"status": r.status, **({"error": r.error} if r.error else {})},
        )
    return result_data(settings, r)


#: Bytes of Completed values a process (a worker agent, a task's child) keeps in memory by result id,
#: and the largest value it keeps. A Completed result never changes (it is written once), so a value
#: read once serves every later task that reads it again: the function a script ships by value, which
#: every task of that function depends on, and arguments shared by many tasks cost one read per
#: process instead of one per task.
VALUE_CACHE_BYTES = 64 * 1024 * 1024
VALUE_CACHE_ITEM_MAX_BYTES = 4 * 1024 * 1024


class _ValueCache:
    """Least recently used Completed values, bounded in bytes; safe across threads."""

    def __init__(self, capacity: int, item_max: int) -> None:
        self._capacity = capacity
        self._item_max = item_max
        self._values: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, ids: Iterable[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        with self._lock:
            for rid in ids:
                value = self._values.get(rid)
                if value is not None:
                    self._values.move_to_end(rid)
                    out[rid] = value
        return out

    def put_many(self, values: dict[str, bytes]) -> None:
        with self._lock:
            for rid, value in values.items():
                if len(value) > self._item_max or rid in self._values:
                    continue
                self._values[rid] = value
                self._bytes += len(value)
            while self._bytes > self._capacity and self._values:
                _, dropped = self._values.popitem(last=False)
                self._bytes -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._bytes = 0


_values_read = _ValueCache(VALUE_CACHE_BYTES, VALUE_CACHE_ITEM_MAX_BYTES)


def _cache_key(session_id: str, result_id: str) -> str:
    """Values are kept by session and id: a deleted session's result ids may be taken again by a new
    session, with other values, while a worker process lives on."""
    return f"{session_id}/{result_id}"


def remember_values(session_id: str, values: dict[str, bytes]) -> None:
    """Keep values this process has just committed as Completed (a worker's outputs): a task of the
    same process that reads them next (a tree's join, run where one of its halves ran) reads nothing.
    Only for values whose Completed write has succeeded: the cache never holds anything else."""
    _values_read.put_many({_cache_key(session_id, rid): v for rid, v in values.items()})


def fetch_values(settings: Settings, ids: Sequence[str], *, session_id: str) -> dict[str, bytes]:
    """Values of completed results of session ``session_id`` by id, for a worker about to run a task
    (inline or from S3).

    Values this process read before come from memory (see :data:`VALUE_CACHE_BYTES`)."""
    if not ids:
        return {}
    cache_keys = {rid: _cache_key(session_id, rid) for rid in ids}
    cached = _values_read.get_many(cache_keys.values())
    values = {rid: cached[key] for rid, key in cache_keys.items() if key in cached}
    wanted = [rid for rid in dict.fromkeys(ids) if rid not in values]
    if not wanted:
        return values
    found = {r.result_id: r for r in ResultModel.batch_get(wanted, consistent_read=True)}
    read: dict[str, bytes] = {}
    keys: dict[str, str] = {}
    for rid in wanted:
        r = found.get(rid)
        if r is None or r.status != ResultStatus.COMPLETED.value:
            status = r.status if r is not None else "missing"
            raise Conflict(f"input {rid} is {status}, not Completed")
        if r.inline is not None:
            read[rid] = r.inline
        elif r.s3_key is not None:
            keys[rid] = r.s3_key
        else:
            read[rid] = b""
    read.update(blobs.get_many(settings, keys))
    _values_read.put_many({cache_keys[rid]: v for rid, v in read.items()})
    values.update(read)
    return values


def abort_errors(ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The root failure each aborted result records, by id (one batched read), for a task told which
    of its optional inputs were aborted and why."""
    if not ids:
        return {}
    found = ResultModel.batch_get(list(dict.fromkeys(ids)), consistent_read=True)
    return {r.result_id: dict(r.error or {}) for r in found}
