"""Waiting for results: one server-side long poll per session at a time, shared by every waiter.

The server waits (``POST /sessions/{id}/results/wait``, see :func:`skyloom.core.results.wait_results`)
and answers with the values of small results inline, so a client waiting for and reading 1,000
results makes a handful of requests. Each client keeps one :class:`SessionWaiter` per session, and
every wait on that session goes through it:

- **One long request at a time.** Whichever waiting thread finds no request in flight sends one for
  the ids that every current wait still needs (``all`` mode for a lone wait, ``any`` for several),
  then shares the answer; the others sleep until it comes. The request's length (its server-side
  timeout) starts at :data:`FIRST_ROUND_SECONDS` and doubles, up to the API's 20 s, for as long as
  no new wait arrives: a long steady wait costs one request per 20 s, and a wait that arrives
  during a request is served at most one round later. A new wait first takes a quick look of its
  own (timeout 0) while a long request is in flight, so ids that are already final never wait.
- **Siblings ride along.** The futures this client submitted are *tracked*: the oldest pending ones
  travel in each request's ``also`` list, and the answer settles every one that is final, with its
  value. ``[f.result() for f in futures]`` therefore costs a request per batch of completions, not
  one per future; starts of long requests are at least :data:`MIN_ROUND_SECONDS` apart so a stream
  of completions is read in batches.
- **Values.** Values come inline up to the server's budget per answer; what did not fit (and large
  values, which come as presigned URLs) is fetched by :mod:`skyloom.client.values` in as few
  requests as the budget allows.
- **Callbacks.** ``add_done_callback`` and ``await`` are served by one background thread per
  session (:meth:`SessionWaiter.watch`), which is just another waiter.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skyloom.client import values
from skyloom.client.futures import DoneCallback, Future, is_final, run_callbacks
from skyloom.client.http import transient
from skyloom.core.protocol import MAX_IDS_PER_REQUEST, WAIT_MAX_SECONDS, ResultData, ResultInfo, WaitMode, WaitResponse
from skyloom.errors import NotFound, SkyloomError, WaitTimeout

if TYPE_CHECKING:
    from skyloom.client.lowlevel import Client

logger = logging.getLogger(__name__)

#: Pause between two wait requests failing for a transient reason, and the longest outage a wait
#: without a deadline outlasts before it raises.
OUTAGE_PAUSE_SECONDS = 1.0
MAX_OUTAGE_SECONDS = 60.0

#: The first long request of a round asks the server to wait this long; steady waits double it.
FIRST_ROUND_SECONDS = 1.0
#: Long requests start at least this far apart: at most forty a second while results stream in (a
#: lone wait that follows another starts within this, so it bounds one task's latency too).
MIN_ROUND_SECONDS = 0.025
#: An ``any`` wait over more ids than one request holds looks at them a window at a time, this long each.
SPLIT_ROUND_SECONDS = 1.0
#: Tracked futures that ride along in a request's ``also``: two BatchGetItem pages on the server,
#: and the oldest pending ones, which a client reading its futures in order meets first.
ALSO_MAX = 200
#: A sleeping waiter looks at its deadline at least this often.
_NAP_SECONDS = 1.0
#: Delegations followed when cancelling (a task that returned a future hands its result on).
MAX_CANCEL_HOPS = 100

@dataclass(eq=False)
class _Wait:
    """One caller waiting for ``ids``; updated by whichever thread reads an answer."""

    ids: list[str]
    mode: WaitMode
    deadline: float | None
    round_cap: float = WAIT_MAX_SECONDS
    on_settled: Callable[[int], None] | None = None
    #: Ids not final yet, in the caller's order.
    pending: dict[str, None] = field(default_factory=dict)
    #: Ids no request has looked at since this wait began (``timeout=0`` still looks once).
    unchecked: set[str] = field(default_factory=set)
    #: The latest state seen of each id, when the caller wants them (the low-level API does).
    latest: dict[str, ResultInfo] | None = None
    any_final: bool = False
    failed: bool = False
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.pending = dict.fromkeys(self.ids)
        self.unchecked = set(self.ids)

    def add(self, ids: Iterable[str]) -> None:
        for i in ids:
            if i not in self.pending:
                self.ids.append(i)
                self.pending[i] = None
                self.unchecked.add(i)

    def satisfied(self) -> bool:
        if self.error is not None or not self.pending:
            return True
        if self.mode == "any":
            return self.any_final
        return self.mode == "first_failure" and self.failed


@dataclass(frozen=True)
class _Plan:
    """One request to send: what it asks, and the waits registered when it started."""

    ids: list[str]
    also: list[str]
    mode: WaitMode
    timeout: float
    values: bool
    waits: list[_Wait]
    long: bool
    started: float


class SessionWaiter:
    """Every wait of one client on one session. Get it with :meth:`Client.waiter`."""

    def __init__(self, client: Client, session_id: str):
        self._client = client
        self._sid = session_id
        self._cond = threading.Condition()
        self._waits: list[_Wait] = []
        #: Futures to settle when their result is final, by id, oldest first.
        self._tracked: dict[str, list[weakref.ref[Future[Any]]]] = {}
        #: When a request last looked at each pending id (as waited for or in ``also``).
        self._seen: dict[str, float] = {}
        #: The end (monotonic) of the long request in flight, or None.
        self._busy_until: float | None = None
        self._next_start = 0.0
        self._round = FIRST_ROUND_SECONDS
        self._newcomer = False
        self._watched: _Wait | None = None
        self._closed = False

    @property
    def session_id(self) -> str:
        return self._sid

    @property
    def client(self) -> Client:
        """The client it asks (what a future reads its task's details with)."""
        return self._client

    # ------------------------------------------------------------------------------- interface
    def track(self, futures: Iterable[Future[Any]]) -> None:
        """Settle ``futures`` whenever an answer says they are final (and let them ride along)."""
        with self._cond:
            for f in futures:
                self._track_locked(f)

    def settle(
        self,
        futures: Sequence[Future[Any]],
        *,
        timeout: float | None,
        mode: WaitMode = "all",
        check: bool = False,
        round_cap: float = WAIT_MAX_SECONDS,
        on_settled: Callable[[int], None] | None = None,
    ) -> bool:
        """Wait until all (or any, or all unless one fails) of ``futures`` are final.

        Args:
            round_cap: the longest request to send (a progress bar asks for short ones).
            on_settled: called with the number of ids that became final, as answers arrive.

        Returns:
            Whether the condition holds; False when ``timeout`` passed first.

        Raises:
            WaitTimeout: ``timeout`` passed first and ``check`` is set.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            open_ = [f for f in futures if f._status is None]
            for f in open_:
                self._track_locked(f)
        if not open_:
            return True
        if mode == "any" and len(open_) < len(futures):
            return True
        if mode == "first_failure" and any(f._failed() for f in futures):
            return True
        w = _Wait(list(dict.fromkeys(f.id for f in open_)), mode, deadline, round_cap, on_settled)
        self._run(w)
        if w.satisfied():
            return True
        if check:
            raise _timeout(w.ids, w.pending, timeout)
        return False

    def wait_ids(self, ids: Sequence[str], timeout: float | None, mode: WaitMode = "all") -> dict[str, ResultInfo]:
        """Wait for result ids (the low-level API); returns the latest state seen of each.

        Raises:
            WaitTimeout: ``timeout`` passed first (after at least one look at every id).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        w = _Wait(list(dict.fromkeys(ids)), mode, deadline, latest={})
        self._run(w)
        if not w.satisfied():
            raise _timeout(w.ids, w.pending, timeout)
        return w.latest or {}

    def poll(self, futures: Sequence[Future[Any]]) -> None:
        """Ask the server once whether ``futures`` are final, unless a request looked a moment ago."""
        now = time.monotonic()
        with self._cond:
            open_ = [f for f in futures if f._status is None]
            recent = all(now - self._seen.get(f.id, -MIN_ROUND_SECONDS) < MIN_ROUND_SECONDS for f in open_)
            if not open_ or recent:
                return
            for f in open_:
                self._track_locked(f)
            plan = self._quick_plan(list(dict.fromkeys(f.id for f in open_)), now, also=True)
        self._send(plan)

    def load(self, futures: Sequence[Future[Any]]) -> None:
        """Bring the values (or errors) of settled futures into memory; see :func:`values.load`."""
        values.load(self._client, self._sid, futures)

    def cancel(self, futures: Sequence[Future[Any]]) -> None:
        """Cancel the tasks producing ``futures`` (following delegations), and settle them."""
        with self._cond:
            open_ = [f for f in futures if f._status is None]
            for f in open_:
                self._track_locked(f)
        todo: dict[str, str | None] = {f.id: f.task_id for f in open_}
        for _ in range(MAX_CANCEL_HOPS):
            tasks = sorted({t for t in todo.values() if t})
            if tasks:
                self._client.cancel_tasks(self._sid, tasks)
            infos = self._client.get_results(self._sid, list(todo))
            self._apply(infos, [], [])
            todo = {
                i.result_id: i.owner_task_id
                for i in infos
                if not is_final(i.status) and i.owner_task_id and i.owner_task_id != todo[i.result_id]
            }
            if not todo:
                return

    def watch(self, future: Future[Any]) -> None:
        """Settle ``future`` from a background thread (its callbacks run when it is final), unless
        another wait settles it first."""
        with self._cond:
            if future._status is not None:
                return
            self._track_locked(future)
            if self._watched is None:
                self._watched = _Wait([], "any", None)
                thread = threading.Thread(target=self._watch_loop, args=(self._watched,), daemon=True,
                                          name=f"skyloom-watch-{self._sid[:8]}")
                thread.start()
            self._watched.add([future.id])
            self._newcomer = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the background thread (at its next turn); waits of other threads go on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ----------------------------------------------------------------------------------- rounds
    def _run(self, w: _Wait) -> None:
        """Until ``w`` holds, fails, or passes its deadline after one look at each of its ids."""
        with self._cond:
            self._waits.append(w)
            self._newcomer = True
        try:
            while True:
                with self._cond:
                    if w.satisfied():
                        return
                    now = time.monotonic()
                    late = w.deadline is not None and now >= w.deadline
                    if late and not w.unchecked:
                        return
                    if self._busy_until is not None:
                        if not w.unchecked:
                            self._cond.wait(self._nap(w, now))
                            continue
                        # A long request is in flight without our ids: look at them on our own, at once.
                        plan = self._quick_plan(self._unchecked_of(w), now, also=False)
                    else:
                        pause = self._next_start - now
                        if pause > 0 and not late:
                            self._cond.wait(min(pause, self._nap(w, now)))
                            continue
                        plan = self._long_plan(w, now)
                self._send(plan)
        finally:
            with self._cond:
                self._waits.remove(w)
                for i in w.ids:  # forget what no wait and no future needs any more
                    if i not in self._tracked and not any(i in x.pending for x in self._waits):
                        self._seen.pop(i, None)

    def _long_plan(self, w: _Wait, now: float) -> _Plan:
        """The shared request: every pending id of every wait, least recently looked at first."""
        waits = [x for x in self._waits if not x.satisfied()]
        order: dict[str, int] = {}
        for x in waits:
            for i in x.pending:
                order.setdefault(i, len(order))
        candidates = sorted(order, key=lambda i: (self._seen.get(i, 0.0), order[i]))
        ids = candidates[:MAX_IDS_PER_REQUEST]
        mode: WaitMode = waits[0].mode if len(waits) == 1 else "any"
        timeout = min([self._round, *(x.round_cap for x in waits)])
        if len(ids) < len(candidates) and mode != "all":
            timeout = min(timeout, SPLIT_ROUND_SECONDS)  # the other ids get their turn soon
        if w.deadline is not None:
            timeout = min(timeout, max(0.0, w.deadline - now))
        also = self._also(set(ids), MAX_IDS_PER_REQUEST - len(ids), now)
        self._busy_until = now + timeout
        return self._plan(ids, also, mode, timeout, now, long=True)

    def _quick_plan(self, ids: list[str], now: float, *, also: bool) -> _Plan:
        extra = self._also(set(ids), MAX_IDS_PER_REQUEST - len(ids), now) if also else []
        return self._plan(ids[:MAX_IDS_PER_REQUEST], extra, "all", 0.0, now, long=False)

    def _plan(self, ids: list[str], also: list[str], mode: WaitMode, timeout: float, now: float, *,
              long: bool) -> _Plan:
        for i in (*ids, *also):
            self._seen[i] = now
        values = bool(also) or any(i in self._tracked for i in ids)
        return _Plan(ids, also, mode, timeout, values, list(self._waits), long, now)

    def _send(self, plan: _Plan) -> None:
        """Send one request and share its answer (or its error) with every wait."""
        try:
            answer = self._outlast(plan)
        except BaseException as exc:
            with self._cond:
                if plan.long:
                    self._end_round(plan)
                blamed = isinstance(exc, SkyloomError) and self._blame(plan, exc)
                self._cond.notify_all()
            if not blamed:
                raise
            return
        with self._cond:
            if plan.long:
                self._end_round(plan)
            looked = set(plan.ids) | set(plan.also)
            for x in plan.waits:
                x.unchecked -= looked
        self._apply(answer.results, answer.values, answer.incomplete)

    def _outlast(self, plan: _Plan) -> WaitResponse:
        """The plan's request, sent again while it fails for a transient reason (the endpoint
        unreachable, a 5xx) and its waits have time left: a network glitch or an API outage delays a
        wait, it does not fail it. Without a deadline, an outage is outlasted for
        :data:`MAX_OUTAGE_SECONDS`. Waits are reads: sending one again changes nothing."""
        started = time.monotonic()
        deadlines = [w.deadline for w in plan.waits if w.deadline is not None]
        limit = min(deadlines) if deadlines and len(deadlines) == len(plan.waits) else started + MAX_OUTAGE_SECONDS
        while True:
            try:
                return self._client.wait_once(
                    self._sid, plan.ids, timeout=plan.timeout, mode=plan.mode, also=plan.also, values=plan.values
                )
            except Exception as exc:
                if not transient(exc) or time.monotonic() + OUTAGE_PAUSE_SECONDS >= limit:
                    raise
                logger.warning("waiting for results: %s; trying again", exc)
            time.sleep(OUTAGE_PAUSE_SECONDS)

    def _end_round(self, plan: _Plan) -> None:
        self._busy_until = None
        self._next_start = plan.started + MIN_ROUND_SECONDS
        # Longer rounds only while nobody new waits: a newcomer is never more than a round late.
        self._round = FIRST_ROUND_SECONDS if self._newcomer else min(self._round * 2, WAIT_MAX_SECONDS)
        self._newcomer = False

    def _blame(self, plan: _Plan, exc: SkyloomError) -> bool:
        """Give an unknown-id error to the waits that asked for those ids; True if any took it."""
        missing = set((exc.details or {}).get("missing") or []) if isinstance(exc, NotFound) else set()
        blamed = False
        for x in self._waits:
            if missing & x.pending.keys():
                x.error, blamed = exc, True
        return blamed

    def _apply(self, infos: Sequence[ResultInfo], values: Sequence[ResultData], incomplete: Sequence[str]) -> None:
        """Record what an answer says, settle futures and wake the waits; callbacks run after."""
        by_id = {v.result_id: v for v in values}
        cut = set(incomplete)
        settled: list[tuple[Future[Any], list[DoneCallback]]] = []
        progress: dict[int, tuple[Callable[[int], None], int]] = {}
        with self._cond:
            for info in infos:
                rid = info.result_id
                final = is_final(info.status)
                for x in self._waits:
                    if rid in x.pending:
                        if x.latest is not None:
                            x.latest[rid] = info
                        if final:
                            del x.pending[rid]
                            x.any_final = True
                            x.failed = x.failed or info.status != "Completed"
                            if x.on_settled is not None:
                                progress[id(x)] = (x.on_settled, progress.get(id(x), (x.on_settled, 0))[1] + 1)
                if not final:
                    continue
                self._seen.pop(rid, None)
                for ref in self._tracked.pop(rid, ()):
                    f = ref()
                    if f is not None:
                        settled.append((f, f._settle(info, by_id.get(rid), rid in cut)))
            self._cond.notify_all()
        for f, callbacks in settled:
            run_callbacks(f, callbacks)
        for report, n in progress.values():
            report(n)

    # ------------------------------------------------------------------------------------ parts
    def _track_locked(self, f: Future[Any]) -> None:
        refs = self._tracked.get(f.id)
        if refs is None:
            self._tracked[f.id] = [weakref.ref(f)]
        elif not any(r() is f for r in refs):
            refs.append(weakref.ref(f))

    def _also(self, skip: set[str], room: int, now: float) -> list[str]:
        """The oldest tracked futures still pending, not looked at a moment ago; forgets the dead."""
        out: list[str] = []
        dead: list[str] = []
        limit = min(ALSO_MAX, room)
        for rid, refs in self._tracked.items():
            if len(out) >= limit:
                break
            if not any(r() is not None for r in refs):
                dead.append(rid)
            elif rid not in skip and now - self._seen.get(rid, -MIN_ROUND_SECONDS) >= MIN_ROUND_SECONDS:
                out.append(rid)
        for rid in dead:
            del self._tracked[rid]
            self._seen.pop(rid, None)
        return out

    @staticmethod
    def _unchecked_of(w: _Wait) -> list[str]:
        return [i for i in w.pending if i in w.unchecked][:MAX_IDS_PER_REQUEST]

    @staticmethod
    def _nap(w: _Wait, now: float) -> float:
        limit = _NAP_SECONDS if w.deadline is None else w.deadline - now
        return max(0.001, min(_NAP_SECONDS, limit))

    def _watch_loop(self, w: _Wait) -> None:
        """The background waiter of callbacks and ``await``: runs while watched futures are pending."""
        backoff = 1.0
        while True:
            with self._cond:
                for rid in [i for i in w.pending if not any(r() is not None for r in self._tracked.get(i, ()))]:
                    del w.pending[rid]  # every future of it is gone, so is every callback
                w.ids = list(w.pending)  # the watcher lives long: keep only what it still waits for
                if self._closed or not w.pending:
                    self._watched = None
                    return
                w.any_final = False
            try:
                self._run(w)
            except SkyloomError as exc:
                w.error = exc
            error, w.error = w.error, None
            if error is None:
                backoff = 1.0
                continue
            if isinstance(error, NotFound):
                self._fail_watched(w, error)
                continue
            logger.warning("waiting for session %s in the background failed, retrying: %s", self._sid, error)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    def _fail_watched(self, w: _Wait, exc: BaseException) -> None:
        details = exc.details if isinstance(exc, SkyloomError) and exc.details else {}
        missing = set(details.get("missing") or [])
        failed: list[tuple[Future[Any], list[DoneCallback]]] = []
        with self._cond:
            for rid in [i for i in w.pending if not missing or i in missing]:
                del w.pending[rid]
                for ref in self._tracked.pop(rid, ()):
                    f = ref()
                    if f is not None:
                        failed.append((f, f._fail(exc)))
        for f, callbacks in failed:
            run_callbacks(f, callbacks)


def _timeout(ids: list[str], pending: Iterable[str], timeout: float | None) -> WaitTimeout:
    left = [i for i in ids if i in set(pending)]
    shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
    return WaitTimeout(
        f"{len(left)} of {len(ids)} results still not final after {timeout or 0:g} s: {shown}",
        details={"pending": left[:100]},
    )
