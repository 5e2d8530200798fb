"""``Future.logs()`` and ``TaskLogs.render()`` over a stub client: which attempts are asked for, and
how their logs read as one text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from skyloom.client.futures import Future
from skyloom.core.protocol import AttemptLog, TaskLogs

FIRST = AttemptLog(number=1, worker="w1", outcome="error", text="pricing\nboom\n", bytes=13)
SECOND = AttemptLog(number=2, worker="w2", outcome="completed", text="... 10 bytes cut ...\nok", bytes=12, cut=10)


@dataclass
class StubClient:
    """Answers task_logs() from two attempts, and records what it was asked."""

    asked: list[tuple[str, str, int | None]] = field(default_factory=list)

    def task_logs(self, session_id: str, task_id: str, *, attempt: int | None = None) -> TaskLogs:
        self.asked.append((session_id, task_id, attempt))
        attempts = [a for a in (FIRST, SECOND) if attempt is None or a.number == attempt]
        return TaskLogs(task_id=task_id, session_id=session_id, attempts=attempts)


@dataclass
class StubBackend:
    """The part of a Backend that logs() uses: the session, and a waiter holding the client."""

    client: StubClient = field(default_factory=StubClient)
    session_id: str = "s1"

    def waiter(self, futures: Any) -> StubBackend:
        return self


def future(task_id: str | None = "t1") -> tuple[Future[Any], StubClient]:
    b = StubBackend()
    return Future("r1", b, task_id), b.client  # type: ignore[arg-type]


def test_every_attempt_reads_as_one_text_each_under_its_header() -> None:
    f, client = future()
    assert f.logs() == (
        "--- task t1 attempt 1 (error, worker w1) ---\npricing\nboom\n"
        "--- task t1 attempt 2 (completed, worker w2) ---\n... 10 bytes cut ...\nok\n"
    )
    assert client.asked == [("s1", "t1", None)]


def test_one_attempt_reads_as_it_printed() -> None:
    f, client = future()
    assert f.logs(1) == "pricing\nboom\n"
    assert client.asked == [("s1", "t1", 1)]


def test_negative_attempts_count_from_the_last() -> None:
    f, _ = future()
    assert f.logs(-1) == SECOND.text
    assert f.logs(-2) == FIRST.text
    assert f.logs(-3) == ""


def test_a_value_stored_with_put_has_no_logs() -> None:
    f, _ = future(task_id=None)
    with pytest.raises(ValueError, match="put"):
        f.logs()


def test_render_of_no_attempt_is_empty() -> None:
    assert TaskLogs(task_id="t", session_id="s", attempts=[]).render() == ""
