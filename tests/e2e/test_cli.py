"""The inspection CLI against the local stack: real HTTP, real workers, output parsed back.

One small session is run once for the module (a fan of squares into a sum, one failing task, one
low-level handler), then every command is pointed at it through ``--endpoint``.
"""

from __future__ import annotations

import json
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import skyloom
from skyloom.cli import app
from skyloom.client.specs import TaskRequest
from skyloom.core.protocol import ResultSpec
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
#: Each step of the squares -> sum chain takes this long, so that the chain is the critical path
#: by construction: the failing task alone takes a fraction of it even on a loaded emulator.
CHAIN_STEP_SECONDS = 1.5


@skyloom.task
def cli_square(x: int) -> int:
    time.sleep(CHAIN_STEP_SECONDS)
    return x * x


@skyloom.task
def cli_sum(*xs: int) -> int:
    time.sleep(CHAIN_STEP_SECONDS)
    return sum(xs)


@skyloom.task(max_retries=0)
def cli_broken() -> int:
    raise RuntimeError("broken on purpose")


@dataclass(frozen=True)
class Ran:
    endpoint: str
    session_id: str
    total_id: str
    reversed_result: str
    reverse_task: str


@pytest.fixture(scope="module")
def ran(local_stack: Any) -> Iterator[Ran]:
    client = skyloom.connect(local_stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
    try:
        with client.session(name="cli-e2e") as s:
            total = cli_sum.submit(*[cli_square.submit(i) for i in range(4)])
            bad = cli_broken.submit()
        assert total.result(timeout=TIMEOUT) == 14
        with pytest.raises(skyloom.TaskFailed):
            bad.result(timeout=TIMEOUT)
        (out,) = client.create_results(s.session_id, [ResultSpec(name="reversed")])
        sub = client.submit_tasks(
            s.session_id, [TaskRequest("e2e.reverse", expected_outputs=[out.result_id], payload=b"olleh")]
        )
        client.wait_results(s.session_id, [out.result_id], timeout=TIMEOUT)
        yield Ran(local_stack.endpoint, s.session_id, total.id, out.result_id, sub.tasks[0].task_id)
    finally:
        client.close()


def run(ran: Ran, *args: str) -> Result:
    return CliRunner().invoke(app, [*args], env={"SKYLOOM_ENDPOINT": ran.endpoint}, catch_exceptions=False)


def stdout(r: Result) -> str:
    """The command's stdout without the lines the in-process functions of the local stack print
    there meanwhile (Powertools logs and metrics, tagged with their service)."""
    return "".join(line for line in r.stdout.splitlines(keepends=True) if '"service":"skyloom-' not in line)


def run_json(ran: Ran, *args: str) -> Any:
    r = run(ran, *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(stdout(r))


def test_sessions_list_and_show(ran: Ran) -> None:
    listed = run_json(ran, "sessions", "list", "--all")
    assert ran.session_id in [s["session_id"] for s in listed["sessions"]]
    shown = run_json(ran, "sessions", "show", ran.session_id)
    assert shown["session"]["name"] == "cli-e2e"
    assert shown["tasks"]["Completed"] == 6 and shown["tasks"]["Error"] == 1
    table = run(ran, "sessions", "list")
    assert table.exit_code == 0 and ran.session_id in stdout(table)


def test_tasks_list_filters_and_show(ran: Ran) -> None:
    failed = run_json(ran, "tasks", "list", ran.session_id, "--status", "error")["tasks"]
    assert len(failed) == 1
    low = run_json(ran, "tasks", "list", ran.session_id, "--handler", "e2e.reverse")["tasks"]
    assert [t["task_id"] for t in low] == [ran.reverse_task]
    # A @skyloom.task function is found by its name, though it runs under the shared skyloom.call.
    squares = run_json(ran, "tasks", "list", ran.session_id, "--handler", f"{__name__}.cli_square")["tasks"]
    assert squares and {(t["handler"], t["label"]) for t in squares} == {("skyloom.call", f"{__name__}.cli_square")}
    by_duration = run_json(ran, "tasks", "list", ran.session_id, "--sort", "duration", "--desc", "--limit", "2",
                           "--all")["tasks"]
    assert len(by_duration) == 7
    shown = run_json(ran, "tasks", "show", failed[0]["task_id"])  # session found by search
    assert shown["task"]["attempts"][0]["traceback"]
    assert "broken on purpose" in shown["task"]["attempts"][0]["message"]
    text = run(ran, "tasks", "show", ran.reverse_task, "--session", ran.session_id)
    assert text.exit_code == 0 and "compute" in stdout(text) and "reversed" in stdout(text)
    assert "memory peak" in stdout(text)  # the child's VmHWM, on Linux


def test_results_list_show_download(ran: Ran, tmp_path: Path) -> None:
    aborted = run_json(ran, "results", "list", ran.session_id, "--status", "Aborted")["results"]
    assert len(aborted) == 1
    shown = run_json(ran, "results", "show", aborted[0]["result_id"], "--session", ran.session_id)
    assert shown["error"]["message"]
    target = tmp_path / "out.bin"
    r = run(ran, "results", "download", ran.reversed_result, "-o", str(target))
    assert r.exit_code == 0, r.output
    assert target.read_bytes() == b"olleh"


def test_watch_exits_when_nothing_is_left_and_reports_failures(ran: Ran) -> None:
    r = run(ran, "watch", ran.session_id, "--json", "--interval", "0.2")
    assert r.exit_code == 2, r.output  # one task failed
    summary = json.loads(stdout(r).strip().splitlines()[-1])["summary"]
    assert summary["tasks"] == 7 and summary["failed"] == 1


def test_stats_per_handler_and_critical_path(ran: Ran) -> None:
    stats = run_json(ran, "stats", ran.session_id)
    handlers = {h["handler"]: h for h in stats["handlers"]}
    assert handlers["e2e.reverse"]["count"] == 1
    assert handlers[f"{__name__}.cli_broken"]["count"] == 1 and "skyloom.call" not in handlers
    assert sum(h["count"] for h in handlers.values()) == 7
    path = [t["handler"] for t in stats["critical_path"]["tasks"]]
    assert path == [f"{__name__}.cli_square", f"{__name__}.cli_sum"]  # a square, then the sum that read it


def test_graph_dot(ran: Ran) -> None:
    r = run(ran, "graph", ran.session_id)
    assert r.exit_code == 0, r.output
    assert stdout(r).startswith("digraph") and f"t_{ran.reverse_task}" in stdout(r)
    summarized = run(ran, "graph", ran.session_id, "--max-nodes", "3")
    assert "summarized by handler" in stdout(summarized)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not installed (apt-get install graphviz)")
def test_graph_svg(ran: Ran, tmp_path: Path) -> None:
    target = tmp_path / "g.svg"
    r = run(ran, "graph", ran.session_id, "--format", "svg", "-o", str(target))
    assert r.exit_code == 0, r.output
    root = ET.fromstring(target.read_bytes())
    assert root.tag.endswith("svg")


def test_unknown_ids_are_one_line_errors(ran: Ran) -> None:
    for args in (("sessions", "show", "nope"), ("tasks", "list", "nope"), ("watch", "nope"),
                 ("tasks", "show", "nope", "--session", ran.session_id)):
        r = CliRunner().invoke(app, [*args], env={"SKYLOOM_ENDPOINT": ran.endpoint})
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.output


def test_lifecycle_commands(ran: Ran) -> None:
    client = skyloom.connect(ran.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
    try:
        sid = client.create_session(name="cli-lifecycle").session_id
        assert run_json(ran, "sessions", "pause", sid)["status"] == "Paused"
        # Paused: a task is accepted but does not start, so it can be cancelled from the CLI.
        (out,) = client.create_results(sid, [ResultSpec(name="never")])
        sub = client.submit_tasks(sid, [TaskRequest("e2e.reverse", expected_outputs=[out.result_id], payload=b"x")])
        tid = sub.tasks[0].task_id
        cancelled = run_json(ran, "tasks", "cancel", sid, tid)["tasks"]
        assert [t["status"] for t in cancelled] == ["Cancelled"]
        assert run_json(ran, "sessions", "resume", sid)["status"] == "Running"
        assert run_json(ran, "sessions", "cancel", sid)["status"] == "Cancelled"
        deleted = run(ran, "sessions", "delete", sid, "--yes")
        assert deleted.exit_code == 0, deleted.output
        gone = CliRunner().invoke(app, ["sessions", "show", sid], env={"SKYLOOM_ENDPOINT": ran.endpoint})
        assert gone.exit_code == 1 and gone.stderr.startswith("error: ")
    finally:
        client.close()
