"""The inspection CLI's pure parts: graph drawing, statistics, time parsing, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from skyloom.cli import app
from skyloom.cli.common import CliError, parse_when, statuses
from skyloom.cli.graph import Format, output_format, render, summary_dot, to_dot
from skyloom.cli.stats import critical_path, handler_stats, percentile
from skyloom.cli.watch import WatchState
from skyloom.core.protocol import ResultInfo, TaskInfo
from skyloom.core.protocol_queries import Event


def task(tid: str, handler: str = "h", *, status: str = "Completed", deps: tuple[str, ...] = (),
         outs: tuple[str, ...] = (), start: float | None = 10.0, end: float | None = 11.0,
         parent: str | None = None) -> TaskInfo:
    return TaskInfo(task_id=tid, session_id="s", status=status, handler=handler, data_dependencies=list(deps),
                    expected_outputs=list(outs), options={}, created_at=0.0, started_at=start, ended_at=end,
                    parent_task_id=parent)


def result(rid: str, owner: str | None, status: str = "Completed", name: str | None = None) -> ResultInfo:
    return ResultInfo(result_id=rid, session_id="s", status=status, owner_task_id=owner, created_at=0.0, name=name)


# A diamond: a -> ra -> (b, c) -> (rb, rc) -> d; c is slow.
DIAMOND_TASKS = [
    task("a", "load", outs=("ra",), start=0, end=1),
    task("b", "fast", deps=("ra",), outs=("rb",), start=1, end=2),
    task("c", "slow", deps=("ra",), outs=("rc",), start=1, end=6),
    task("d", "join", deps=("rb", "rc"), outs=("rd",), start=6, end=7),
]
DIAMOND_RESULTS = [result("ra", "a"), result("rb", "b"), result("rc", "c"), result("rd", "d", name='say "hi"')]


def test_critical_path_follows_the_slow_branch() -> None:
    path = critical_path(DIAMOND_TASKS, DIAMOND_RESULTS)
    assert [t.task_id for t in path.tasks] == ["a", "c", "d"]
    assert path.length == pytest.approx(7.0)
    assert path.wall == pytest.approx(7.0)


def test_critical_path_counts_the_parent_that_submitted_a_task() -> None:
    tasks = [task("p", start=0, end=3), task("child", start=3, end=4, parent="p"), task("other", start=0, end=2)]
    assert [t.task_id for t in critical_path(tasks, []).tasks] == ["p", "child"]


def test_critical_path_of_nothing() -> None:
    assert critical_path([], []).tasks == []


def test_handler_stats_percentiles_ignore_tasks_that_did_not_run() -> None:
    tasks = [task(str(i), "h", start=0, end=float(i)) for i in range(1, 11)]
    tasks.append(task("q", "h", status="Submitted", start=None, end=None))
    (h,) = handler_stats(tasks)
    assert h.count == 11 and h.by_status == {"Completed": 10, "Submitted": 1}
    assert (h.p50, h.p90, h.max) == (5.0, 9.0, 10.0)
    assert percentile([], 50) is None


def test_functions_are_told_apart_though_they_share_one_handler() -> None:
    # GIVEN two @skyloom.task functions (one handler, two labels) and a registered handler
    tasks = [task("a", "skyloom.call", outs=("ra",)), task("b", "skyloom.call", deps=("ra",), outs=("rb",)),
             task("c", "app.upper")]
    tasks[0] = tasks[0].model_copy(update={"label": "book.price"})
    tasks[1] = tasks[1].model_copy(update={"label": "book.total"})
    # THEN stats and the summarized graph name the functions, not skyloom.call
    assert [s.handler for s in handler_stats(tasks)] == ["app.upper", "book.price", "book.total"]
    dot = summary_dot(tasks, [result("ra", "a"), result("rb", "b")])
    assert '"h_book.price" -> "h_book.total" [label="1"];' in dot and "skyloom.call" not in dot


def test_dot_draws_tasks_results_and_escapes_labels() -> None:
    dot = to_dot(DIAMOND_TASKS, DIAMOND_RESULTS)
    assert dot.startswith('digraph "skyloom" {')
    assert '"t_a" -> "r_ra";' in dot and '"r_ra" -> "t_b";' in dot
    assert 'say \\"hi\\"' in dot
    assert "fillcolor=palegreen" in dot


def test_dot_marks_a_delegated_output() -> None:
    tasks = [task("parent", outs=("r",)), task("sub", outs=("r",), parent="parent")]
    dot = to_dot(tasks, [result("r", "sub")])
    assert '"t_sub" -> "r_r";' in dot
    assert '"t_parent" -> "r_r" [style=dashed, label="delegated"];' in dot


def test_dot_marks_optional_and_lazy_inputs() -> None:
    reader = task("b", deps=("ra", "rx"), outs=("rb",)).model_copy(
        update={"optional_dependencies": ["ra"], "lazy_dependencies": ["ra"]})
    dot = to_dot([task("a", outs=("ra",)), reader], [result("ra", "a"), result("rx", "a"), result("rb", "b")])
    assert '"r_ra" -> "t_b" [style=dotted, label="optional lazy"];' in dot
    assert '"r_rx" -> "t_b";' in dot


def test_large_graphs_are_summarized_by_handler() -> None:
    dot = to_dot(DIAMOND_TASKS, DIAMOND_RESULTS, max_nodes=3)
    assert dot == summary_dot(DIAMOND_TASKS, DIAMOND_RESULTS)
    assert '"h_load" -> "h_slow" [label="1"];' in dot and "t_a" not in dot


def test_render_without_dot_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert render("digraph {}", Format.dot) == b"digraph {}"
    with pytest.raises(CliError, match="needs Graphviz's `dot`"):
        render("digraph {}", Format.svg)


def test_the_output_file_names_the_format() -> None:
    # `skyloom graph S -o graph.svg` draws an SVG: a .svg file never holds DOT text.
    assert output_format(None, Path("graph.svg")) is Format.svg
    assert output_format(None, Path("g.PNG")) is Format.png and output_format(None, Path("g.gv")) is Format.dot
    assert output_format(None, None) is Format.dot and output_format(None, Path("graph")) is Format.dot
    assert output_format(Format.dot, Path("graph.svg")) is Format.dot  # an explicit --format wins
    with pytest.raises(CliError, match=r"--output graph\.jpeg.*--format"):
        output_format(None, Path("graph.jpeg"))


def test_graph_without_dot_fails_before_any_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    r = invoke("graph", "s1", "-o", str(tmp_path / "g.svg"), "--endpoint", "http://127.0.0.1:9")
    assert r.exit_code == 2 and "needs Graphviz's `dot`" in r.stderr and not (tmp_path / "g.svg").exists()


def test_listings_take_the_session_as_argument_or_option() -> None:
    for kind in ("tasks", "results"):
        # --session reaches the endpoint (which is unreachable), like the argument does
        for args in ((kind, "list", "s1"), (kind, "list", "--session", "s1"), (kind, "list", "s1", "--session", "s1")):
            r = invoke(*args, "--endpoint", "http://127.0.0.1:9")
            assert r.exit_code == 1 and "cannot reach Skyloom" in r.stderr, (args, r.stderr)
        r = invoke(kind, "list", "--endpoint", "http://127.0.0.1:9")
        assert r.exit_code == 2 and "give SESSION or --session" in r.stderr
        r = invoke(kind, "list", "s1", "--session", "s2", "--endpoint", "http://127.0.0.1:9")
        assert r.exit_code == 2 and "two sessions given" in r.stderr
        # -s stays --status, as before --session existed
        r = invoke(kind, "list", "--session", "s1", "-s", "Error", "--endpoint", "http://127.0.0.1:9")
        assert r.exit_code == 1 and "cannot reach Skyloom" in r.stderr, r.stderr


def test_parse_when_accepts_ages_iso_and_epoch() -> None:
    assert parse_when("10m", now=1000.0) == 400.0
    assert parse_when("1700000000") == 1700000000.0
    assert parse_when("2026-01-01T00:00:00+00:00") == 1767225600.0
    assert parse_when(None) is None
    with pytest.raises(CliError):
        parse_when("yesterday-ish")


def test_statuses_split_repeats_and_commas() -> None:
    assert statuses(["Error,Timeout", "Cancelled"]) == ["Error", "Timeout", "Cancelled"]
    assert statuses([]) is None


def test_watch_state_counts_throughput_and_what_is_left() -> None:
    state = WatchState()
    ev = [Event(kind="task", id="a", status="Processing", at=1.0),
          Event(kind="task", id="b", status="Creating", at=1.0)]
    assert state.apply(ev, now=0.0) == 0
    assert state.left(wall_now=100.0, grace=30.0) == 1  # b staged long ago: an orphan, not work left
    assert state.apply([Event(kind="task", id="a", status="Completed", at=2.0)], now=1.0) == 1
    assert state.left(wall_now=100.0, grace=30.0) == 0
    assert state.throughput(now=1.0, watched_for=1.0) == pytest.approx(1.0)
    # a repeated final event is not counted twice
    assert state.apply([Event(kind="task", id="a", status="Completed", at=2.0)], now=2.0) == 0


# ------------------------------------------------------------------------------ one-line errors
def invoke(*args: str, env: dict[str, Any] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize("args", [("sessions", "list"), ("tasks", "show", "t1"), ("watch", "s1"), ("graph", "s1"),
                                  ("stats", "s1"), ("results", "download", "r1", "--session", "s1")])
def test_unreachable_endpoint_is_one_line(args: tuple[str, ...]) -> None:
    r = invoke(*args, "--endpoint", "http://127.0.0.1:9")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: cannot reach Skyloom at http://127.0.0.1:9")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_no_endpoint_says_how_to_get_one(tmp_path: Path) -> None:
    r = invoke("sessions", "list", env={"SKYLOOM_ENDPOINT": "", "SKYLOOM_HOME": str(tmp_path)})
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: no Skyloom endpoint: run `skyloom local up` or set SKYLOOM_ENDPOINT"
