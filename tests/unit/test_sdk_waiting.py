"""Waiting is server-side: one long poll per session at a time, whose answers carry the values.

Counts, never timings: the fake server records every request, and blocks a wait like the real
route (until something changes or its timeout passes).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import skyloom
from skyloom.client import waiting
from skyloom.client.lowlevel import Client
from skyloom.core.protocol import MAX_IDS_PER_REQUEST, ResultSpec
from skyloom.errors import ConnectionFailed, Unauthorized
from tests.unit.test_sdk_fakeserver import FakeServer


@skyloom.task
def double(x: int) -> int:
    return 2 * x


@skyloom.task(max_retries=0)
def fail(message: str) -> int:
    raise ValueError(message)


@skyloom.task(max_retries=0)
def fail_loudly(i: int) -> int:
    raise ValueError(f"trade {i}: " + "x" * 2000)


@skyloom.task
def blob(i: int) -> bytes:
    return bytes([i % 256]) * 1000


def reads(server: FakeServer) -> dict[str, int]:
    """Requests that wait for or read results (submissions left out)."""
    return {part: server.count(part) for part in ("/results/wait", "/results/get", "/data", "/events")}


def timeouts(server: FakeServer) -> list[float]:
    return [float(b.get("timeout", 10.0)) for b in server.posts("/results/wait")]


# ------------------------------------------------------------------------------ request counts
@pytest.mark.parametrize("how", ["gather", "in turn", "session.wait"])
def test_waiting_for_and_reading_1000_results_is_a_handful_of_requests(how: str) -> None:
    # GIVEN a thousand submitted functions
    server = FakeServer()
    with Client(server) as c, c.session() as s:
        futures = [double.submit(i) for i in range(1000)]
        # WHEN they are waited for and read: all at once, one after the other, or at the low level
        if how == "gather":
            values = skyloom.gather(futures)
        elif how == "in turn":
            values = [f.result(timeout=30) for f in futures]
        else:
            values = [2 * i for i, info in enumerate(s.wait(futures, timeout=30)) if info.status == "Completed"]
    # THEN the values are right, and a handful of waits carried them: no per-result reads at all
    assert values == [2 * i for i in range(1000)]
    counts = reads(server)
    assert counts["/results/get"] == counts["/data"] == counts["/events"] == 0
    assert counts["/results/wait"] <= {"gather": 2, "in turn": 6, "session.wait": 1}[how], counts
    assert all(len(b["ids"]) + len(b.get("also", [])) <= MAX_IDS_PER_REQUEST for b in server.posts("/results/wait"))


def test_a_future_read_after_its_siblings_answer_costs_nothing() -> None:
    server = FakeServer()
    with Client(server) as c, c.session():
        futures = [double.submit(i) for i in range(50)]
        assert futures[0].result() == 0
        n = len(server.calls)
        # the first answer settled its siblings, with their values
        assert [f.result() for f in futures[1:]] == [2 * i for i in range(1, 50)]
        assert all(f.done() for f in futures)
    assert len(server.calls) == n


def test_done_on_many_futures_asks_a_few_times() -> None:
    server = FakeServer()
    with Client(server) as c, c.session():
        futures = [double.submit(i) for i in range(500)]
        c.flush()
        before = server.count("/results/wait")
        assert all(f.done() for f in futures)
    # each look also covers the oldest tracked siblings (ALSO_MAX of them)
    assert server.count("/results/wait") - before <= 500 // (waiting.ALSO_MAX + 1) + 1


def test_values_beyond_the_answer_budget_come_in_a_few_more_requests() -> None:
    # GIVEN answers that hold about ten 1-KB values
    server = FakeServer(wait_budget=14_000)
    with Client(server) as c, c.session():
        futures = [blob.submit(i) for i in range(100)]
        values = skyloom.gather(futures)
    # THEN every value arrives, about ten per request
    assert values == [bytes([i]) * 1000 for i in range(100)]
    assert server.count("/results/wait") <= 100 // 9 + 3


def test_errors_beyond_the_answer_budget_keep_their_details() -> None:
    # GIVEN forty failures whose errors do not fit in one answer
    server = FakeServer(wait_budget=10_000)
    with Client(server) as c, c.session():
        futures = [fail_loudly.submit(i) for i in range(40)]
        done, not_done = skyloom.wait(futures)
        # THEN each one still raises its own error, with the remote traceback
        assert not not_done and len(done) == 40
        for i in (0, 17, 39):
            err = futures[i].exception()
            assert isinstance(err, skyloom.TaskFailed)
            assert f"trade {i}: " in str(err) and "in fail_loudly" in (err.remote_traceback or "")


# -------------------------------------------------------------------------------- long polls
def test_threads_waiting_at_once_share_one_long_request() -> None:
    # GIVEN eight threads waiting on eight futures that nothing runs yet
    server = FakeServer(auto_run=False)
    client = Client(server)
    with client.session():
        futures = [double.submit(i) for i in range(8)]
    got: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, futures[i].result(timeout=30)))
               for i in range(8)]
    for t in threads:
        t.start()
    _until(lambda: server.waiting == 1)
    # WHEN the work runs
    server.run()
    for t in threads:
        t.join(30)
    # THEN every thread got its value, and the server never had two long polls of this client at once
    assert got == {i: 2 * i for i in range(8)}
    assert server.most_waiting == 1


def test_an_idle_wait_is_a_few_long_requests_that_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "FIRST_ROUND_SECONDS", 0.2)
    server = FakeServer(auto_run=False)
    client = Client(server)
    with client.session():
        f = double.submit(1)
    with pytest.raises(skyloom.WaitTimeout, match="1 of 1 results still not final"):
        f.result(timeout=1.6)
    asked = timeouts(server)
    # one request per round, not a busy loop; rounds double while nobody new waits
    assert 2 <= len(asked) <= 6, asked
    assert max(asked) >= 2 * waiting.FIRST_ROUND_SECONDS


def test_a_newcomer_looks_at_once_beside_a_long_poll() -> None:
    # GIVEN a thread long-polling for a result nothing produces
    server = FakeServer(auto_run=False)
    client = Client(server)
    with client.session() as s:
        stuck = double.submit(1)
        (ready,) = s.create_results([b"ready"])
    outcome: list[BaseException] = []

    def wait_stuck() -> None:
        try:
            stuck.result(timeout=4)
        except skyloom.WaitTimeout as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_stuck)
    waiter.start()
    _until(lambda: server.waiting == 1)
    # WHEN another wait comes for a result that is already final
    (info,) = client.wait_results(s.session_id, [ready], timeout=30)
    # THEN it is answered by a quick look of its own while the long poll goes on
    assert info.status == "Completed" and waiter.is_alive()
    assert {"ids": [ready], "timeout": 0.0} in [{k: b.get(k) for k in ("ids", "timeout")}
                                               for b in server.posts("/results/wait")]
    waiter.join(30)
    assert len(outcome) == 1


def test_timeout_zero_reports_what_is_already_final() -> None:
    server = FakeServer()
    client = Client(server)
    with client.session() as s:
        (rid,) = s.create_results([b"ready"])
        (info,) = s.wait([rid], timeout=0)
    assert info.status == "Completed"


def test_ids_from_elsewhere_are_waited_a_request_at_a_time() -> None:
    # GIVEN 2500 results the waiting client did not create (another process, the low level)
    server = FakeServer()
    client = Client(server)
    sid = client.create_session().session_id
    ids = [f"r{i}" for i in range(2500)]
    client.create_results(sid, [ResultSpec(id=i, data="") for i in ids])
    # WHEN they are waited for
    infos = client.wait_results(sid, [*ids, ids[0]], timeout=5)
    # THEN they come back in order, in one request per thousand ids
    assert [i.result_id for i in infos] == ids and {i.status for i in infos} == {"Completed"}
    assert all(len(b["ids"]) <= MAX_IDS_PER_REQUEST for b in server.posts("/results/wait"))
    assert server.count("/results/wait") == 3


def test_an_unknown_id_is_an_error_every_time() -> None:
    server = FakeServer()
    client = Client(server)
    sid = client.create_session().session_id
    for _ in range(2):
        with pytest.raises(skyloom.ResultNotFound):
            client.wait_results(sid, ["nope"], timeout=1)


def test_an_unknown_id_fails_only_the_wait_that_named_it() -> None:
    # GIVEN a thread waiting for a real future while the shared request is in flight
    server = FakeServer(auto_run=False)
    client = Client(server)
    with client.session() as s:
        f = double.submit(21)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(f.result(timeout=30)))
    t.start()
    _until(lambda: server.waiting == 1)
    # WHEN another wait names an id that does not exist
    with pytest.raises(skyloom.ResultNotFound):
        client.wait_results(s.session_id, ["nope"], timeout=5)
    server.run()
    t.join(30)
    # THEN only that wait failed
    assert got == [42]


def test_an_unknown_id_in_the_shared_request_fails_only_its_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN short rounds far apart, so a second wait joins the next shared request
    monkeypatch.setattr(waiting, "FIRST_ROUND_SECONDS", 0.2)
    monkeypatch.setattr(waiting, "MIN_ROUND_SECONDS", 1.0)
    server = FakeServer(auto_run=False)
    client = Client(server)
    with client.session() as s:
        f = double.submit(21)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(f.result(timeout=30)))
    t.start()
    _until(lambda: server.count("/results/wait") >= 1 and server.waiting == 0)
    # WHEN a wait for an unknown id joins it (the request names both waits' ids)
    with pytest.raises(skyloom.ResultNotFound):
        client.wait_results(s.session_id, ["nope"], timeout=30)
    assert any(set(b["ids"]) == {f.id, "nope"} for b in server.posts("/results/wait"))
    server.run()
    t.join(30)
    # THEN the error went to that wait only
    assert got == [42]


def test_failures_keep_their_details() -> None:
    server = FakeServer()
    with Client(server) as c, c.session():
        f = double.submit(fail.submit("boom"))
        with pytest.raises(skyloom.DependencyAborted, match="ValueError: boom") as info:
            f.result(timeout=5)
    assert info.value.remote_type == "ValueError"


def test_tasks_carry_their_function_name_but_run_under_one_handler() -> None:
    server = FakeServer()
    with Client(server) as c, c.session() as s:
        f = double.submit(fail.submit("x"))
    (task,) = [t for t in server.tasks.values() if f.id in t.outputs]
    assert task.handler == "skyloom.call" and task.label == f"{__name__}.double"
    (parent,) = s.get_tasks([task.task_id])
    assert parent.label == f"{__name__}.double"
    with pytest.raises(ValueError, match="label"):
        skyloom.TaskRequest("h", ["r"], label="x" * 1000)


def _until(condition: Any, limit: float = 30.0) -> None:
    """Poll a condition of the test's own making (not a timing assertion: it only bounds a hang)."""
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "condition never held"
        time.sleep(0.01)


class _FlakyServer(FakeServer):
    """A server whose wait route is unreachable for its first ``outage`` requests."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.outage = outage

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        if path.endswith("/results/wait") and self.outage > 0:
            self.outage -= 1
            raise ConnectionFailed("injected: the endpoint is unreachable")
        return super().request(method, path, body, timeout=timeout)


def test_a_wait_with_time_left_outlasts_a_network_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "OUTAGE_PAUSE_SECONDS", 0.01)
    server = _FlakyServer(outage=3)
    with Client(server) as c, c.session():
        assert double.submit(21).result(timeout=30) == 42
    assert server.outage == 0


def test_a_wait_gives_up_on_an_outage_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "OUTAGE_PAUSE_SECONDS", 0.01)
    server = _FlakyServer(outage=10**9)
    with Client(server) as c, c.session(), pytest.raises((ConnectionFailed, skyloom.WaitTimeout)):
        double.submit(1).result(timeout=0.5)


def test_a_wait_raises_a_non_transient_error_at_once() -> None:
    class Refusing(FakeServer):
        waits = 0

        def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
            if path.endswith("/results/wait"):
                Refusing.waits += 1
                raise Unauthorized("injected: not yours")
            return super().request(method, path, body, timeout=timeout)

    with Client(Refusing()) as c, c.session(), pytest.raises(Unauthorized):
        double.submit(1).result(timeout=30)
    assert Refusing.waits == 1
