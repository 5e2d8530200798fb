"""Waiting end to end: server-side long polls over real HTTP, values in the answers, and the
concurrent.futures surface (map, wait, as_completed, gather, cancel, callbacks, await) on real
workers. Request counts are asserted, never timings."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

import skyloom

pytestmark = pytest.mark.slow

TIMEOUT = 240.0


@skyloom.task
def square(x: int) -> int:
    return x * x


@skyloom.task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@skyloom.task
def hand_over(seconds: float):  # type: ignore[no-untyped-def]
    return nap.submit(seconds)  # delegates this task's result to a long subtask


@skyloom.task(max_retries=0)
def broken(message: str) -> int:
    raise ValueError(message)


class CountingTransport:
    """The client's transport, recording the path of every request."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.paths: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        self.paths.append(path)
        return self.inner.request(method, path, body, timeout=timeout)

    def count(self, part: str) -> int:
        return sum(part in p for p in self.paths)


@pytest.fixture
def counted(client: skyloom.Client) -> Iterator[CountingTransport]:
    transport = CountingTransport(client._t)
    client._t = transport  # type: ignore[assignment]
    yield transport
    client._t = transport.inner


def test_reading_1000_results_is_one_request(client: skyloom.Client, counted: CountingTransport) -> None:
    # GIVEN 1,000 small values already in a session (stored as a client's put would store them)
    with client.session() as s:
        ids = s.create_results([cloudpickle.dumps(i) for i in range(1000)])
    futures: list[skyloom.Future[int]] = [skyloom.Future(rid, s) for rid in ids]
    before = len(counted.paths)
    # WHEN they are gathered
    assert skyloom.gather(futures, timeout=TIMEOUT) == list(range(1000))
    # THEN one wait request carried every value
    assert counted.paths[before:] == [f"/sessions/{s.session_id}/results/wait"]


def test_waiting_for_100_running_tasks_is_a_handful_of_requests(
    client: skyloom.Client, counted: CountingTransport
) -> None:
    with client.session():
        futures = [square.submit(i) for i in range(100)]
    before = counted.count("/results/wait")
    assert skyloom.gather(futures, timeout=TIMEOUT) == [i * i for i in range(100)]
    # one request per round (1, 1, 2, 4, 8, 16, then 20 s) while the tasks run, whatever their number,
    # plus one to read what the last answer left out; never a per-result read
    assert counted.count("/results/wait") - before <= 20
    assert counted.count("/data") == 0 and counted.count("/events") == 0 and counted.count("/results/get") == 0


def test_map_as_completed_and_wait(client: skyloom.Client) -> None:
    with client.session():
        assert list(square.map(range(12), chunksize=5, timeout=TIMEOUT)) == [i * i for i in range(12)]
        futures = [square.submit(i) for i in range(10)]
        assert sorted(f.result() for f in skyloom.as_completed(futures, timeout=TIMEOUT)) == [
            i * i for i in range(10)
        ]
        slow, bad = nap.submit(30), broken.submit("no curve")
        done, not_done = skyloom.wait([slow, bad], timeout=TIMEOUT, return_when=skyloom.FIRST_EXCEPTION)
        assert done == {bad} and not_done == {slow}
        with pytest.raises(skyloom.TaskFailed, match="no curve"):
            skyloom.gather([slow, bad], timeout=TIMEOUT)
        assert slow.cancel()


def test_cancel_stops_a_task_and_follows_delegation(client: skyloom.Client) -> None:
    with client.session() as s:
        running = nap.submit(120)
        handed = hand_over.submit(120)
    # WHEN the task that delegated its result has completed, its future is cancelled
    deadline = time.monotonic() + TIMEOUT
    while s.get_tasks([handed.task_id or ""])[0].status != "Completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert handed.cancel() and running.cancel()
    # THEN the subtask producing it now was cancelled, and both raise TaskCancelled at once
    for f in (handed, running):
        assert f.cancelled() and f.done()
        with pytest.raises(skyloom.TaskCancelled):
            f.result(timeout=0)
    (info,) = s.get_results([handed.id])
    assert info.owner_task_id != handed.task_id


def test_callbacks_and_await(client: skyloom.Client) -> None:
    with client.session():
        f = square.submit(9)
        ran = threading.Event()
        got: list[int] = []
        f.add_done_callback(lambda fut: (got.append(fut.result()), ran.set()))
        futures = [square.submit(i) for i in range(5)]

    async def main() -> list[int]:
        return list(await asyncio.gather(*futures))

    assert asyncio.run(main()) == [i * i for i in range(5)]
    assert ran.wait(TIMEOUT) and got == [81]
