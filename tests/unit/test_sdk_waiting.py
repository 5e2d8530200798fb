"""Waiting follows the session's events feed: one reader per session, backing off while idle."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import skyloom
from skyloom.client import waiting
from skyloom.client.lowlevel import Client
from skyloom.core.protocol import MAX_IDS_PER_REQUEST, ResultSpec
from tests.unit.test_sdk_fakeserver import FakeServer


@skyloom.task
def double(x: int) -> int:
    return 2 * x


@skyloom.task(max_retries=0)
def fail(message: str) -> int:
    raise ValueError(message)


class CountingServer(FakeServer):
    """Records how many events reads were on the wire at once."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self._gate = threading.Lock()
        self.reading = 0
        self.most_reading = 0

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        if "/events" not in path:
            with self._gate:
                return super().request(method, path, body, timeout=timeout)
        with self._gate:
            self.reading += 1
            self.most_reading = max(self.most_reading, self.reading)
        time.sleep(0.01)  # long enough for overlapping readers to show
        try:
            with self._gate:
                return super().request(method, path, body, timeout=timeout)
        finally:
            with self._gate:
                self.reading -= 1

    def count(self, part: str) -> int:
        return sum(1 for _, p, _ in self.calls if part in p)


def test_many_futures_cost_a_few_feed_reads_and_no_status_reads() -> None:
    # GIVEN fifty futures of one session
    server = CountingServer()
    with Client(server) as c, c.session():
        futures = [double.submit(i) for i in range(50)]
        # WHEN each is waited for in turn
        values = [f.result(timeout=10) for f in futures]
    # THEN the values are right, the feed was read a handful of times, and nothing polled the results
    assert values == [2 * i for i in range(50)]
    assert server.count("/events") <= 3
    assert server.count("/results/wait") == 0 and server.count("/results/get") == 0


def test_threads_waiting_at_once_share_one_reader() -> None:
    # GIVEN eight threads waiting on eight futures that nothing runs yet
    server = CountingServer(auto_run=False)
    client = Client(server)
    with client.session():
        futures = [double.submit(i) for i in range(8)]
    got: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, futures[i].result(timeout=10)))
               for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # WHEN the work runs
    with server._gate:
        server.run()
    for t in threads:
        t.join(10)
    # THEN every thread got its value, and the feed never had two readers at once
    assert got == {i: 2 * i for i in range(8)}
    assert server.most_reading == 1


def test_an_idle_feed_is_read_less_and_less_often() -> None:
    server = CountingServer(auto_run=False)
    client = Client(server)
    with client.session():
        f = double.submit(1)
    start = time.monotonic()
    with pytest.raises(skyloom.WaitTimeout, match="1 of 1 results still not final"):
        f.result(timeout=1.5)
    elapsed = time.monotonic() - start
    # 20 polls a second at first, slowing to one a second: far fewer than a fixed fast pace.
    assert 1.5 <= elapsed < 3.0
    assert 3 <= server.count("/events") <= 10


def test_unsettled_changes_end_a_wait_without_waiting_for_the_horizon() -> None:
    # GIVEN a feed on which changes settle late (here: never)
    server = CountingServer(settle_reads=10**6)
    with Client(server) as c, c.session():
        # THEN results are still seen final, from the feed's recent changes
        assert double.submit(21).result(timeout=5) == 42


def test_failures_keep_their_details() -> None:
    server = CountingServer()
    with Client(server) as c, c.session():
        f = double.submit(fail.submit("boom"))
        with pytest.raises(skyloom.DependencyAborted, match="ValueError: boom") as info:
            f.result(timeout=5)
    assert info.value.remote_type == "ValueError"


def test_tasks_carry_their_function_name_but_run_under_one_handler() -> None:
    server = CountingServer()
    with Client(server) as c, c.session() as s:
        f = double.submit(fail.submit("x"))
    (task,) = [t for t in server.tasks.values() if f.id in t.outputs]
    assert task.handler == "skyloom.call" and task.label == f"{__name__}.double"
    (parent,) = s.get_tasks([task.task_id])
    assert parent.label == f"{__name__}.double"
    with pytest.raises(ValueError, match="label"):
        skyloom.TaskRequest("h", ["r"], label="x" * 1000)


def test_timeout_zero_reports_what_is_already_final() -> None:
    server = CountingServer()
    client = Client(server)
    with client.session() as s:
        (rid,) = s.create_results([b"ready"])
        (info,) = s.wait([rid], timeout=0)
    assert info.status == "Completed"


def test_ids_from_elsewhere_are_checked_once_then_followed() -> None:
    # GIVEN 2500 results the waiting client did not create (another process, the low level)
    server = CountingServer()
    client = Client(server)
    sid = client.create_session().session_id
    ids = [f"r{i}" for i in range(2500)]
    client.create_results(sid, [ResultSpec(id=i, data="") for i in ids])
    # WHEN they are waited for twice
    infos = client.wait_results(sid, [*ids, ids[0]], timeout=5)
    gets = server.count("/results/get")
    client.wait_results(sid, ids[:10], timeout=5)
    # THEN they come back in order; the server was asked once per id chunk, then the feed answers
    assert [i.result_id for i in infos] == ids and {i.status for i in infos} == {"Completed"}
    assert all(len(b["ids"]) <= MAX_IDS_PER_REQUEST for b in server.posts("/results/get"))
    assert server.count("/results/get") == gets + 1  # the second wait only reads the final states


def test_a_long_feed_is_drained_without_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "MAX_EVENTS", 100)
    server = CountingServer()
    client = Client(server)
    with client.session() as s:
        ids = s.create_results([b"x"] * 450)
        start = time.monotonic()
        assert len(s.wait(ids, timeout=5)) == 450
    assert time.monotonic() - start < 1.0 and server.count("/events") >= 5


def test_an_unknown_id_is_an_error_every_time() -> None:
    server = CountingServer()
    client = Client(server)
    sid = client.create_session().session_id
    for _ in range(2):
        with pytest.raises(skyloom.ResultNotFound):
            client.wait_results(sid, ["nope"], timeout=1)


class LosingFeedServer(CountingServer):
    """A feed that never shows the changes of ``lost`` results: writes that became visible only
    after the feed's cursor had passed their time (a slow write; GSI reads are eventually consistent)."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.lost: set[str] = set()

    def _events(self, sid: str, query: str | None, body: Any) -> Any:
        page = super()._events(sid, query, body)
        for part in ("events", "recent"):
            page[part] = [e for e in page[part] if e["id"] not in self.lost]
        return page


def test_a_change_the_feed_missed_delays_a_wait_but_never_hangs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a result whose completion the events feed never shows (LocalStack exposed it: a commit
    # stamped at T became visible after the feed had settled past T)
    monkeypatch.setattr(waiting, "PENDING_RECHECK_SECONDS", 0.2)
    server = LosingFeedServer()
    with Client(server) as c, c.session():
        f = double.submit(21)
        server.lost.add(f.id)
        # WHEN it is waited for
        start = time.monotonic()
        value = f.result(timeout=5)
    # THEN the wait asked the server directly after a while, and ended
    assert value == 42 and time.monotonic() - start < 2.0
    assert server.count("/results/get") >= 1


class FlakyServer(FakeServer):
    """Fails the next ``outage`` feed reads as a transport whose retries are spent would."""

    def __init__(self, error: Exception, outage: int, **kw: Any):
        super().__init__(**kw)
        self.error, self.outage = error, outage

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        if "/events" in path and self.outage > 0:
            self.outage -= 1
            self.calls.append((method, path, body))
            raise self.error
        return super().request(method, path, body, timeout=timeout)


@pytest.mark.parametrize("error", [
    skyloom.ConnectionFailed("cannot reach Skyloom after 6 attempts"),
    skyloom.SkyloomError("Service Unavailable (GET /sessions/s/events -> 503)"),
])
def test_a_wait_with_time_left_outlasts_an_outage(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    monkeypatch.setattr(waiting, "OUTAGE_PAUSE_SECONDS", 0.01)
    # GIVEN a future, and an endpoint that fails the next three reads of the feed for a transient reason
    server = FlakyServer(error, outage=0)
    with Client(server) as c, c.session():
        f = double.submit(21)
        server.outage = 3
        # WHEN the client waits with time left THEN it outlasts the outage
        assert f.result(timeout=10) == 42
    assert server.outage == 0


def test_a_wait_does_not_outlast_its_deadline_nor_a_real_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "OUTAGE_PAUSE_SECONDS", 0.01)
    server = FlakyServer(skyloom.ConnectionFailed("down"), outage=10**6)
    with Client(server) as c, c.session():
        f = double.submit(1)
        started = time.monotonic()
        with pytest.raises(skyloom.ConnectionFailed):
            f.result(timeout=0.3)  # the outage outlasts the wait: its own error, once time is up
        assert time.monotonic() - started < 5
        server.error, server.outage = skyloom.NotFound("no such session"), 10**6
        reads = sum(1 for _, p, _ in server.calls if "/events" in p)
        with pytest.raises(skyloom.NotFound):
            f.result(timeout=10)  # not transient: raised at once, after one read
        assert sum(1 for _, p, _ in server.calls if "/events" in p) == reads + 1
