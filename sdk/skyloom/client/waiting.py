"""Waiting for results: one reader of a session's events feed, shared by everything waiting on it.

A thousand futures waited on one after the other must not cost a thousand long-polls, and ten
threads waiting at once must not poll ten times. So each client keeps one :class:`SessionFeed` per
session: whichever waiting thread finds nobody reading becomes the reader, fetches the next page of
``GET /sessions/{id}/events`` (from the cursor it kept), records the final states it learns and
wakes the others. The rest sleep until a page arrives. Polls back off while nothing happens and
resume at once when something does; ``recent`` changes (not yet settled on the server) are used too,
so a result is seen as final a poll after it is written rather than a second later.

The feed is read from the start of the session, once, which is what lets it answer for the results
this client created without asking the server about each: their final states are remembered as they
pass. For any other id the first wait checks the server once (after registering the id, so a change
cannot fall between that check and the feed).

A wait outlasts a network glitch: a read that fails for a transient reason (the endpoint unreachable
or answering 5xx/429 through every retry of the transport) is tried again every
:data:`OUTAGE_PAUSE_SECONDS` until the wait's own deadline (at most :data:`MAX_OUTAGE_SECONDS` of
outage for a wait without one): a waiter with time left never fails for a few seconds of outage.

The feed can still miss a change: its cursor passes a time once the server's settle horizon has, and
a write stamped before that horizon may become visible in the index after it (a slow or retried
write; GSI reads are only eventually consistent). So a wait that has gone on for
:data:`PENDING_RECHECK_SECONDS` asks the server for the states of the ids it still waits for, then
again at growing intervals: a missed change delays a wait, it never hangs it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from skyloom.client.http import transient
from skyloom.core.protocol_queries import MAX_EVENTS, Event
from skyloom.errors import WaitTimeout

if TYPE_CHECKING:
    from skyloom.client.lowlevel import Client

_T = TypeVar("_T")

#: Final result states, ranked: a later state may replace an earlier one, never the reverse.
_RANK = {"Completed": 1, "Aborted": 1, "Deleted": 2}
#: Polling pace: right after a change, and the slowest while nothing changes.
MIN_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0
_BACKOFF = 1.5
#: How long a thread sleeps at most before it looks at its own deadline again.
_RECHECK_SECONDS = 1.0
#: A wait still pending after this long asks the server directly for its ids' states, then again
#: after twice as long each time, up to :data:`MAX_PENDING_RECHECK_SECONDS`.
PENDING_RECHECK_SECONDS = 5.0
MAX_PENDING_RECHECK_SECONDS = 30.0
#: Pause between two reads failing for a transient reason, and the longest outage a wait without
#: a deadline outlasts before it raises.
OUTAGE_PAUSE_SECONDS = 1.0
MAX_OUTAGE_SECONDS = 60.0


def is_final(status: str) -> bool:
    return status in _RANK


class SessionFeed:
    """The events-feed reader of one session, for every wait of one client on that session."""

    def __init__(self, client: Client, session_id: str):
        self._client = client
        self._session_id = session_id
        self._cond = threading.Condition()
        self._cursor: str | None = None
        #: Ids whose final state the feed records as it passes (created here, or waited on before).
        self._known: set[str] = set()
        self._final: dict[str, str] = {}
        self._reading = False
        self._polls = 0
        self._next_poll = 0.0
        self._delay = MIN_POLL_SECONDS
        self._recent: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------------------- interface
    def track(self, ids: Iterable[str]) -> None:
        """Remember the final states of ``ids`` from now on: results created through this client,
        before they exist on the server, so their completion can never pass unnoticed."""
        with self._cond:
            self._known.update(ids)

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        """The final states of ``ids`` that are known now, after one read of the feed at most."""
        self._register(ids)
        with self._cond:
            idle = not self._reading and time.monotonic() >= self._next_poll
            if idle and any(i not in self._final for i in ids):
                self._reading = True
            else:
                idle = False
        if idle:
            self._read_page()
        with self._cond:
            return {i: self._final[i] for i in ids if i in self._final}

    def wait(
        self, ids: Sequence[str], timeout: float | None, mode: Literal["all", "any"] = "all"
    ) -> dict[str, str]:
        """Wait until all (or any) of ``ids`` are final; returns the final states known by then.

        Raises:
            WaitTimeout: ``timeout`` passed first (after at least one read of the feed that started
                after this call, so ``timeout=0`` still reports what is already final).
        """
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        deadline = None if timeout is None else time.monotonic() + timeout
        first_fresh = self._outlast(lambda: self._register(unique), deadline)
        recheck_every = PENDING_RECHECK_SECONDS
        next_recheck = time.monotonic() + recheck_every
        outage: float | None = None  # when reads began to fail
        while True:
            with self._cond:
                done = [i for i in unique if i in self._final]
                if len(done) == len(unique) or (mode == "any" and done):
                    return {i: self._final[i] for i in done}
                now = time.monotonic()
                pending = [i for i in unique if i not in self._final] if now >= next_recheck else []
            if pending:
                # A change the feed missed (written late, behind its cursor) must not hang the wait.
                recheck_every = min(MAX_PENDING_RECHECK_SECONDS, recheck_every * 2)
                next_recheck = time.monotonic() + recheck_every
                self._outlast(functools.partial(self._check_server, pending), deadline)
                continue
            with self._cond:
                now = time.monotonic()
                # Past the deadline, a read that started after this call decides (timeout=0 included).
                fresh = self._polls >= first_fresh
                if deadline is not None and now >= deadline and fresh:
                    raise _timeout(unique, self._final, timeout)
                pause = max(0.0, self._next_poll - now)
                if self._reading or (deadline is not None and fresh and now + pause >= deadline):
                    # Someone else reads (and wakes us), or the deadline comes before our turn.
                    limit = _RECHECK_SECONDS if deadline is None or not fresh else deadline - now
                    self._cond.wait(max(0.001, min(_RECHECK_SECONDS, limit)))
                    continue
                self._reading = True
            try:
                self._read_page(pause)
                outage = None
            except Exception as exc:
                outage = time.monotonic() if outage is None else outage
                if not self._may_outlast(exc, deadline, outage):
                    raise
                time.sleep(OUTAGE_PAUSE_SECONDS)  # the next turn reads again (or another waiter does)

    # ------------------------------------------------------------------------------------ steps
    def _outlast(self, read: Callable[[], _T], deadline: float | None) -> _T:
        """``read()``, tried again while it fails for a transient reason and the wait has time."""
        started = time.monotonic()
        while True:
            try:
                return read()
            except Exception as exc:
                if not self._may_outlast(exc, deadline, started):
                    raise
            time.sleep(OUTAGE_PAUSE_SECONDS)

    @staticmethod
    def _may_outlast(exc: Exception, deadline: float | None, since: float) -> bool:
        now = time.monotonic()
        limit = deadline if deadline is not None else since + MAX_OUTAGE_SECONDS
        return transient(exc) and now + OUTAGE_PAUSE_SECONDS < limit

    def _register(self, ids: Sequence[str]) -> int:
        """Make the feed record ``ids``; check the server once for those it could have missed.

        The check comes after the registration: a state reached before it is in the answer, one
        reached after it is in a page the feed reads later. Returns the number of the first feed
        read that starts after this registration.
        """
        with self._cond:
            unknown = [i for i in ids if i not in self._known]
            self._known.update(unknown)
            first_fresh = self._polls + (2 if self._reading else 1)
        if unknown:
            try:
                self._check_server(unknown)
            except BaseException:
                with self._cond:  # not vouched for after all: the next wait checks again
                    self._known.difference_update(unknown)
                raise
        return first_fresh

    def _check_server(self, ids: Sequence[str]) -> None:
        """Ask the server for the states of ``ids`` directly, and share what it says."""
        infos = self._client.get_results(self._session_id, ids)
        with self._cond:
            self._record((r.result_id, r.status) for r in infos)
            self._cond.notify_all()

    def _read_page(self, pause: float = 0.0) -> None:
        """After ``pause``, fetch the next page of the feed and share what it says.

        The caller has set ``_reading``: one reader at a time, released here whatever happens.
        """
        try:
            if pause > 0:
                time.sleep(pause)
            page = self._client.events(self._session_id, after=self._cursor, limit=MAX_EVENTS)
        except BaseException:
            with self._cond:
                self._reading = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._reading = False
            self._polls += 1
            self._cursor = page.cursor
            self._record(_final_results(page.events))
            self._record(_final_results(page.recent))
            recent = {(str(e.kind), e.id, e.status) for e in page.recent}
            changed = bool(page.events) or bool(recent - self._recent)
            self._recent = recent
            if page.more:
                self._delay = 0.0
            elif changed:
                self._delay = MIN_POLL_SECONDS
            else:
                self._delay = min(MAX_POLL_SECONDS, max(MIN_POLL_SECONDS, self._delay * _BACKOFF))
            self._next_poll = time.monotonic() + self._delay
            self._cond.notify_all()

    def _record(self, states: Iterable[tuple[str, str]]) -> None:
        for rid, status in states:
            if rid in self._known and _RANK.get(status, 0) >= max(1, _RANK.get(self._final.get(rid, ""), 0)):
                self._final[rid] = status


def _final_results(events: Iterable[Event]) -> Iterable[tuple[str, str]]:
    return ((e.id, e.status) for e in events if e.kind == "result" and is_final(e.status))


def _timeout(ids: list[str], final: dict[str, str], timeout: float | None) -> WaitTimeout:
    pending = [i for i in ids if i not in final]
    shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
    return WaitTimeout(
        f"{len(pending)} of {len(ids)} results still not final after {timeout or 0:g} s: {shown}",
        details={"pending": pending[:100]},
    )
