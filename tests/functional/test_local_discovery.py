"""One local stack, said out loud: discovery waits for a stack that is starting, and ``connect()``
starts at most one embedded stack per process, announces it, publishes it for the CLI and reuses it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import skyloom
from skyloom.local import discovery, embedded
from skyloom.local.discovery import LocalState, discover, mark_starting, read_state, starting, unmark_starting


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SKYLOOM_HOME", str(tmp_path))
    monkeypatch.delenv("SKYLOOM_ENDPOINT", raising=False)
    yield tmp_path
    unmark_starting()
    discovery.unpublish()


def state(endpoint: str, kind: str = discovery.KIND_CLI) -> LocalState:
    return LocalState(endpoint=endpoint, aws_endpoint="http://127.0.0.1:1", region="us-east-1", stack="t",
                      pid=os.getpid(), run_dir="/tmp/run", kind=kind)


# --------------------------------------------------------------------------- the starting marker
def test_discover_waits_for_a_stack_that_is_starting(home: Path) -> None:
    # GIVEN a process (this one) that is starting a stack and publishes it half a second later
    assert mark_starting("/tmp/run")

    def come_up() -> None:
        time.sleep(0.5)
        discovery.publish(state("http://127.0.0.1:4321"))
        unmark_starting()

    threading.Thread(target=come_up).start()
    # THEN without waiting there is none yet, and waiting finds it
    assert discover() is None
    assert discover(wait=30) == "http://127.0.0.1:4321"
    assert starting() is None


def test_waiting_is_bounded_and_says_who_is_starting(home: Path) -> None:
    mark_starting("/tmp/slow-run")
    with pytest.raises(skyloom.ConnectionFailed, match=rf"pid {os.getpid()}.*/tmp/slow-run") as info:
        discover(wait=0.3)
    assert info.value.details["pid"] == os.getpid()


def test_a_dead_starters_marker_is_ignored_and_taken_over(home: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (home / discovery.STARTING_FILE).write_text(f'{{"pid": {int(dead.stdout)}, "since": 0.0}}')
    assert starting() is None and discover(wait=30) is None
    assert mark_starting(exclusive=True) and starting() is not None


def test_only_one_process_claims_the_start(home: Path) -> None:
    # GIVEN a live process holding the marker (our parent stands in for another client)
    (home / discovery.STARTING_FILE).write_text(f'{{"pid": {os.getppid()}, "since": {time.time()}}}')
    # THEN an exclusive claim fails, and `skyloom local up` (not exclusive) takes it anyway
    assert not mark_starting(exclusive=True)
    assert mark_starting() and starting() is not None and starting().pid == os.getpid()  # type: ignore[union-attr]


def test_an_old_state_file_without_kind_is_read(home: Path) -> None:
    (home / discovery.STATE_FILE).write_text(
        f'{{"endpoint": "http://127.0.0.1:9", "aws_endpoint": "x", "region": "r", "stack": "s", '
        f'"pid": {os.getpid()}, "run_dir": "/r"}}'
    )
    found = read_state()
    assert found is not None and found.kind == discovery.KIND_CLI


# ----------------------------------------------------------------------------- the embedded stack
def test_connect_starts_one_embedded_stack_says_so_and_reuses_it(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(embedded, "EMBEDDED_WORKERS", 0)
    try:
        # WHEN a client connects with nothing configured and nothing running
        first = skyloom.connect()
        said = capsys.readouterr().err
        # THEN it started a stack, said so with its endpoint, and published it for the CLI
        assert f"started one at {first.endpoint}" in said and "skyloom local up" in said
        published = read_state()
        assert published is not None and published.endpoint == first.endpoint
        assert published.kind == discovery.KIND_EMBEDDED and published.pid == os.getpid()
        first.close()  # a notebook's `with` cell ends...
        # ... and runs again: the same stack, started once, announced once
        second = skyloom.connect()
        assert second.endpoint == first.endpoint and capsys.readouterr().err == ""
        assert second.list_sessions() is not None
        second.close()
        assert embedded.local_endpoint(announce=io.StringIO()) == first.endpoint
    finally:
        embedded.stop_embedded()
    assert read_state() is None and embedded.embedded_stack() is None


def test_a_running_stack_is_used_not_a_new_one(home: Path) -> None:
    discovery.publish(state("http://127.0.0.1:4322"))
    out = io.StringIO()
    assert embedded.local_endpoint(announce=out) == "http://127.0.0.1:4322"
    assert out.getvalue() == "" and embedded.embedded_stack() is None
