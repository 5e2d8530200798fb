"""The ring that bounds what the agent keeps of a task's prints, as a pure object."""

from __future__ import annotations

import pytest

from skyloom.runtime.outcome import TaskLog, render_log
from skyloom_server.fargate_worker.capture import OutputRing


def test_under_the_limit_everything_is_kept() -> None:
    ring = OutputRing(100)
    ring.write(b"hello ")
    ring.write(b"world\n")
    assert ring.take() == TaskLog(b"hello world\n", 0)


def test_over_the_limit_the_tail_is_kept_from_a_line_start_and_the_cut_counted() -> None:
    # GIVEN a ring of 10 bytes
    ring = OutputRing(10)
    # WHEN 3 lines of 6 bytes are written in pieces
    for piece in (b"aaaaa\n", b"bbb", b"bb\n", b"ccccc\n"):
        ring.write(piece)
    # THEN the cut line is dropped whole and counted: 18 bytes = 12 cut + 6 kept
    log = ring.take()
    assert log == TaskLog(b"ccccc\n", 12)
    assert log.size == 18
    assert render_log(log.text(), log.cut) == "... 12 bytes cut ...\nccccc\n"


def test_memory_stays_bounded_whatever_is_written() -> None:
    ring = OutputRing(1024)
    for _ in range(10_000):
        ring.write(b"y" * 1000)
    log = ring.take()
    assert len(log.tail) == 1024 and log.size == 10_000_000


def test_take_starts_afresh() -> None:
    ring = OutputRing(4)
    ring.write(b"123456")
    ring.take()
    ring.write(b"ab")
    assert ring.take() == TaskLog(b"ab", 0)


def test_undecodable_bytes_do_not_break_the_text() -> None:
    assert TaskLog(b"caf\xc3\xa9 \xff\n").text() == "café \ufffd\n"


def test_a_ring_keeps_at_least_a_byte() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        OutputRing(0)
