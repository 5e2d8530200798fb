"""Futures over collections with the names of concurrent.futures, against the in-memory API:
fn.map, skyloom.wait / as_completed / gather, and Future.task_id / cancel / exception /
add_done_callback / await."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import skyloom
from skyloom.client import backend
from skyloom.client.lowlevel import Client
from skyloom.client.session import Session
from skyloom.runtime.context import TaskContext
from skyloom.runtime.outcome import TaskInput
from tests.unit.test_sdk_fakeserver import FakeServer


@skyloom.task
def square(x: int) -> int:
    return x * x


@skyloom.task
def add(a: int, b: int) -> int:
    return a + b


@skyloom.task(max_retries=0)
def explode(message: str) -> int:
    raise ValueError(message)


@skyloom.task
def big(n: int) -> bytes:
    return b"z" * n


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(server: FakeServer) -> Iterator[Client]:
    c = Client(server)
    backend.set_fallback(c.default_session)
    yield c
    c.close()
    backend.set_fallback(None)


def blocked(session: Session) -> skyloom.Future[int]:
    """A future that never completes: its task waits for a result nobody produces."""
    (never,) = session.create_results(["never"])
    return square.submit(skyloom.Future(never, session))


# -------------------------------------------------------------------------------------- map
def test_map_yields_values_in_order_like_executor_map(client: Client, server: FakeServer) -> None:
    assert list(add.map(range(5), [10, 20, 30, 40, 50])) == [10, 21, 32, 43, 54]
    assert list(square.map(range(200))) == [i * i for i in range(200)]
    # every task was submitted before the first value was asked for, in a few requests
    assert len(server.posts("/tasks")) <= 3


def test_map_chunks_are_one_task_each(client: Client, server: FakeServer) -> None:
    values = list(square.map(range(10), chunksize=4))
    assert values == [i * i for i in range(10)]
    tasks = [t for t in server.tasks.values() if t.label == f"{__name__}.square"]
    assert len(tasks) == 3
    with pytest.raises(ValueError, match="chunksize"):
        square.map([1], chunksize=0)


def test_map_raises_the_first_failure_in_order(client: Client) -> None:
    it = explode.map(["first", "second"])
    with pytest.raises(skyloom.TaskFailed, match="first"):
        next(it)


def test_map_timeout_counts_from_the_call_and_cancels_what_was_not_read(server: FakeServer) -> None:
    server.auto_run = False
    with Client(server) as c, c.session():
        it = square.map(range(3), timeout=0.2)
        with pytest.raises(skyloom.WaitTimeout):
            next(it)
    # leaving the iterator cancelled the tasks whose values were never read
    assert {t.status for t in server.tasks.values()} == {"Cancelled"}


# ------------------------------------------------------------------------------------- wait
def test_wait_all_completed(client: Client, server: FakeServer) -> None:
    futures = [square.submit(i) for i in range(20)]
    done, not_done = skyloom.wait(futures)
    assert done == set(futures) and not not_done
    assert server.count("/results/wait") == 1


def test_wait_first_completed_and_timeouts_do_not_raise(client: Client) -> None:
    with client.session() as s:
        stuck, quick = blocked(s), square.submit(3)
    done, not_done = skyloom.wait([stuck, quick], return_when=skyloom.FIRST_COMPLETED)
    assert done == {quick} and not_done == {stuck}
    done, not_done = skyloom.wait([stuck, quick], timeout=0.1)
    assert done == {quick} and not_done == {stuck}


def test_wait_first_exception_returns_at_the_first_failure(client: Client) -> None:
    with client.session() as s:
        stuck, bad = blocked(s), explode.submit("boom")
    done, not_done = skyloom.wait([stuck, bad], return_when=skyloom.FIRST_EXCEPTION)
    assert done == {bad} and not_done == {stuck}
    assert isinstance(bad.exception(), skyloom.TaskFailed)


def test_wait_accepts_the_names_of_concurrent_futures(client: Client) -> None:
    import concurrent.futures as cf

    f = square.submit(2)
    assert skyloom.wait([f], return_when=cf.FIRST_COMPLETED).done == {f}
    with pytest.raises(ValueError, match="return_when"):
        skyloom.wait([f], return_when="SOON")


def test_wait_over_several_sessions(client: Client) -> None:
    with client.session():
        a = square.submit(2)
    with client.session() as s:
        b, stuck = square.submit(3), blocked(s)
    assert skyloom.wait([a, b]).done == {a, b}
    done, not_done = skyloom.wait([a, b, stuck], timeout=0.1, return_when=skyloom.FIRST_COMPLETED)
    assert done == {a, b} and not_done == {stuck}


# ------------------------------------------------------------------------------ as_completed
def test_as_completed_yields_every_future_once(client: Client) -> None:
    futures = [square.submit(i) for i in range(30)]
    seen = list(skyloom.as_completed(futures + futures[:3]))
    assert sorted(f.result() for f in seen) == sorted(i * i for i in range(30))


def test_as_completed_raises_on_timeout_after_yielding_what_is_done(client: Client) -> None:
    with client.session() as s:
        stuck, quick = blocked(s), square.submit(4)
    it = skyloom.as_completed([stuck, quick], timeout=0.2)
    assert next(it) is quick
    with pytest.raises(skyloom.WaitTimeout, match="1 \\(of 2\\) futures unfinished"):
        next(it)


# ------------------------------------------------------------------------------------ gather
def test_gather_returns_values_in_order(client: Client, server: FakeServer) -> None:
    futures = [square.submit(i) for i in range(100)]
    assert skyloom.gather([*futures, futures[0]]) == [*(i * i for i in range(100)), 0]
    assert server.count("/results/wait") <= 2 and server.count("/data") == 0


def test_gather_downloads_large_values_from_their_urls(client: Client, server: FakeServer) -> None:
    sizes = [100_000, 50_000, 10]
    assert [len(v) for v in skyloom.gather([big.submit(n) for n in sizes])] == sizes
    assert sum(1 for kind, url in server.blob_calls if kind == "GET" and url.startswith("fake://download")) == 2


def test_gather_raises_the_first_failure_without_waiting_for_the_rest(client: Client) -> None:
    with client.session() as s:
        stuck, bad = blocked(s), explode.submit("root cause")
    with pytest.raises(skyloom.TaskFailed, match="root cause"):
        skyloom.gather([stuck, bad])


def test_gather_timeout(client: Client) -> None:
    with client.session() as s:
        stuck = blocked(s)
    with pytest.raises(skyloom.WaitTimeout, match="1 of 1 futures"):
        skyloom.gather([stuck], timeout=0.1)


def test_progress_bar_on_stderr(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    futures = [square.submit(i) for i in range(7)]
    assert skyloom.gather(futures, progress=True) == [i * i for i in range(7)]
    assert skyloom.wait(futures, progress=True).done == set(futures)
    captured = capsys.readouterr()
    assert "7/7" in captured.err and captured.out == ""


# ----------------------------------------------------------------------------------- futures
def test_task_id_names_the_submitted_task(client: Client, server: FakeServer) -> None:
    f = square.submit(5)
    assert f.result() == 25
    assert f.task_id is not None and server.task_of_output(f.id).task_id == f.task_id
    with client.session() as s:
        assert s.put([1, 2]).task_id is None


def test_exception_returns_the_failure_or_none(client: Client) -> None:
    ok, bad = square.submit(2), explode.submit("nope")
    assert ok.exception() is None
    err = bad.exception()
    assert isinstance(err, skyloom.TaskFailed) and "nope" in str(err)
    with pytest.raises(skyloom.TaskFailed):
        bad.result()


def test_cancel_cancels_the_task_on_the_server(server: FakeServer) -> None:
    server.auto_run = False
    with Client(server) as c, c.session():
        f = square.submit(2)
        g = add.submit(f, 1)
        # WHEN the first is cancelled
        assert f.cancel() and f.cancelled() and f.done()
        # THEN its task is Cancelled on the server, its result raises TaskCancelled, and a
        # dependent fails naming it (and is not "cancelled" itself)
        assert server.tasks[f.task_id or ""].status == "Cancelled"
        with pytest.raises(skyloom.TaskCancelled):
            f.result()
        server.run()
        with pytest.raises(skyloom.DependencyAborted):
            g.result(timeout=5)
        assert not g.cancelled() and not g.cancel()


def test_cancel_after_completion_is_false(client: Client) -> None:
    f = square.submit(3)
    assert f.result() == 9
    assert not f.cancel() and not f.cancelled()


def test_done_callbacks_run_once_from_the_background(server: FakeServer) -> None:
    server.auto_run = False
    with Client(server) as c, c.session():
        f = square.submit(6)
        called: list[Any] = []
        ran = threading.Event()

        def record(fut: skyloom.Future[int]) -> None:
            called.append((fut, fut.result(), threading.current_thread().name.startswith("skyloom-watch")))
            ran.set()

        f.add_done_callback(record)
        assert not called
        server.run()
        assert ran.wait(30)
        # a callback added once done runs at once, in the caller's thread
        f.add_done_callback(lambda fut: called.append(threading.current_thread()))
    assert called == [(f, 36, True), threading.current_thread()]


def test_a_failing_callback_is_logged_not_raised(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    f = square.submit(1)
    f.result()

    def bad(_: skyloom.Future[int]) -> None:
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="skyloom.client.futures"):
        f.add_done_callback(bad)
    assert "exception calling callback" in caplog.text


def test_await_from_asyncio(server: FakeServer) -> None:
    server.auto_run = False
    with Client(server) as c, c.session():
        futures = [square.submit(i) for i in range(5)]
        large = big.submit(100_000)

        async def main() -> list[Any]:
            # the work runs while the event loop waits; the loop itself never blocks
            threading.Timer(0.1, server.run).start()
            return list(await asyncio.gather(*futures, large))

        values = asyncio.run(main())
    assert values[:5] == [i * i for i in range(5)] and values[5] == b"z" * 100_000


def test_waiting_inside_a_task_explains_delegation() -> None:
    ctx = TaskContext(TaskInput("t", "s", "skyloom.call", b"", {}, ["out"], {}))
    with ctx.active():
        f = square.submit(2)
        for wait in (lambda: skyloom.gather([f]), lambda: skyloom.wait([f]), lambda: f.add_done_callback(print)):
            with pytest.raises(RuntimeError, match="Return the future"):
                wait()
