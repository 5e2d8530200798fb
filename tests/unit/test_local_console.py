"""The local stack's console routing: a function's output goes to its log, everything else is untouched."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path
from typing import Any

from skyloom.local import console


def test_only_the_routed_thread_inside_an_invocation_is_diverted() -> None:
    # GIVEN a wrapped stream and a function log
    shown, log = io.StringIO(), io.StringIO()
    stream = console.RoutedStream(shown)
    seen: list[str] = []

    def function(event: dict[str, Any], context: Any) -> str:
        stream.write('{"_aws": "metrics"}\n')
        other = threading.Thread(target=lambda: stream.write("another thread\n"))
        other.start()
        other.join()
        return "ok"

    handler = console.logged(function, log)
    # WHEN the function runs, and someone writes outside it
    assert handler({}, None) == "ok"
    stream.write("the user's line\n")
    seen.append(shown.getvalue())
    # THEN the function's output is in its log; the rest reached the console
    assert log.getvalue() == '{"_aws": "metrics"}\n'
    assert seen == ["another thread\nthe user's line\n"]
    assert handler.__module__ == function.__module__ and handler.__name__ == "function"


def test_install_wraps_once_and_keeps_the_stream_attributes(monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    console.install()
    first = sys.stdout
    console.install()
    assert isinstance(sys.stdout, console.RoutedStream) and sys.stdout is first
    assert sys.stdout.getvalue() == ""  # type: ignore[attr-defined]  # the wrapped stream's own method
    log = io.StringIO()
    with console.routed_to(log):
        print("emf")
        print("noisy", file=sys.stderr)  # what warnings.showwarning does by default
    assert log.getvalue() == "emf\nnoisy\n"


def test_a_shared_log_outlives_late_writers(tmp_path: Path) -> None:
    log = console.SharedLog(tmp_path / "functions.log")
    log.write("line\n")
    log.close()
    assert log.write("late\n") == 5  # a function finishing after its stack stopped: dropped, no error
    log.flush()
    assert (tmp_path / "functions.log").read_text() == "line\n"
