"""The agent's self-measurement: busy fraction, memory limit discovery, EMF metrics."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from skyloom_server.fargate_worker import telemetry


def test_busy_fraction_counts_running_and_finished_tasks() -> None:
    meter = telemetry.BusyMeter(slots=2)
    meter.start(1)
    time.sleep(0.2)
    meter.stop(1)
    meter.start(2)  # still running when the window closes: counted up to now
    time.sleep(0.1)
    first = meter.take()
    assert 0.0 < first <= 1.0
    time.sleep(0.1)
    meter.stop(2)
    second = meter.take()  # only the part of task 2 inside the new window
    assert 0.0 < second <= 1.0


def test_an_idle_agent_is_not_busy() -> None:
    meter = telemetry.BusyMeter(slots=4)
    time.sleep(0.01)
    assert meter.take() == 0.0


def test_memory_limit_from_the_environment_first(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("4294967296\n")
    assert telemetry.memory_limit_bytes({"SKYLOOM_WORKER_MEMORY_LIMIT_MB": "512"}, (str(limit),)) == 512 << 20
    # else the container's cgroup limit, shared by the slots
    assert telemetry.memory_limit_bytes({}, (str(limit),), slots=2) == 2 << 30


@pytest.mark.parametrize("content", ["max\n", str(1 << 63)])
def test_no_cgroup_limit_means_none(tmp_path: Path, content: str) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text(content)
    assert telemetry.memory_limit_bytes({}, (str(limit), str(tmp_path / "missing"))) is None


def test_rss_of_a_live_process_and_of_a_gone_one() -> None:
    rss = telemetry.rss_bytes(os.getpid())
    assert rss is not None and rss > 1 << 20
    assert telemetry.rss_bytes(2**22 + 12345) is None


def test_task_metrics_have_partition_and_handler_dimensions_only(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.emit_task_metrics("default", [("price", {"compute": 0.5, "bytes_in": 10.0, "queue_wait": 1.0,
                                                       "fetch": 0.1, "upload": 0.2, "bytes_out": 4.0}, "completed")])
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert set(directive["Dimensions"][0]) == {"partition", "handler", "service"}
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"TaskComputeTime", "TaskQueueWait", "TaskFetchTime", "TaskUploadTime", "TaskBytesIn",
            "TaskBytesOut", "TasksCompleted"} <= names
    assert line["partition"] == "default" and line["handler"] == "price"


def test_outcomes_are_counted_under_their_documented_names(capsys: pytest.CaptureFixture[str]) -> None:
    starts = telemetry.StartCounts("default")
    starts.add("price")
    starts.flush()
    telemetry.emit_task_metrics("default", [("price", {"memory_peak": 1024.0}, "retried")])
    telemetry.emit_task_metrics("default", [("price", {}, "failed")])
    telemetry.emit_task_metrics("default", [("price", {"compute": 1.0}, None)])  # a lost lease: no count
    telemetry.emit_task_metrics("default", [("price", {}, None)])  # nothing to say: no line, no warning
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines() if x.startswith("{")]
    names = [[m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]] for line in lines]
    assert names == [["TasksStarted"], ["ChildMemoryHighWater", "TasksRetried"], ["TasksFailed"],
                     ["TaskComputeTime"]]
    assert lines[1]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] == "Bytes"
    assert "No application metrics" not in out.err


def test_attempts_committed_together_are_told_in_one_line_per_handler(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.emit_task_metrics("default", [
        ("price", {"compute": 0.5}, "completed"),
        ("greeks", {"compute": 2.0}, "completed"),
        ("price", {"compute": 0.7}, "completed"),
        ("price", {"compute": 0.9}, None),
    ])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [line["handler"] for line in lines] == ["price", "greeks"]
    # one data point per attempt: CloudWatch reads a list of values as that many samples
    assert lines[0]["TaskComputeTime"] == [0.5, 0.7, 0.9] and lines[0]["TasksCompleted"] == [1.0, 1.0]
    assert lines[1]["TaskComputeTime"] == [2.0] and lines[1]["TasksCompleted"] == [1.0]


class FakeRecorder:
    """The X-Ray recorder calls an attempt's trace makes, per thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.sampler = self

    def should_trace(self, request: dict[str, str]) -> bool:
        return True

    def begin_segment(self, *, name: str, traceid: str, sampling: int) -> None:
        self.events.append(("segment", name, traceid, str(sampling)))

    def put_annotation(self, key: str, value: str) -> None:
        self.events.append(("annotation", key, value))

    @contextlib.contextmanager
    def in_subsegment(self, name: str) -> Iterator[None]:
        self.events.append(("subsegment", name))
        yield

    def end_segment(self) -> None:
        self.events.append(("end",))


def test_an_attempts_phases_are_subsegments_of_one_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = FakeRecorder()
    monkeypatch.setattr(telemetry, "tracer", SimpleNamespace(disabled=False, provider=recorder))
    trace = telemetry.AttemptTrace("t1", "price")
    for phase in ("fetch", "compute", "upload"):
        with trace.phase(phase):
            pass
    segments = [e for e in recorder.events if e[0] == "segment"]
    assert len(segments) == 3 and len({s[2] for s in segments}) == 1  # one trace id for the attempt
    assert [e[1] for e in recorder.events if e[0] == "subsegment"] == ["fetch", "compute", "upload"]
    assert ("annotation", "task_id", "t1") in recorder.events
    assert recorder.events.count(("end",)) == 3


def test_tracing_off_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = FakeRecorder()
    monkeypatch.setattr(telemetry, "tracer", SimpleNamespace(disabled=True, provider=recorder))
    with telemetry.AttemptTrace("t1", "price").phase("compute"):
        pass
    assert recorder.events == []
    assert telemetry.tracer.disabled  # and the suite runs with POWERTOOLS_TRACE_DISABLED=true


def test_attempts_started_within_a_second_are_told_in_one_line_each_a_data_point(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN starts counted within a second, of two handlers
    starts = telemetry.StartCounts("default", every=60.0)
    for handler in ("price", "price", "greeks", "price"):
        starts.add(handler)
    assert capsys.readouterr().out == ""  # not yet told
    # WHEN they are told (the heartbeat's tick, the agent's exit), and again with nothing new
    starts.flush()
    starts.flush()
    out = capsys.readouterr()
    # THEN one line per handler, one value per start: the same data points as a line each
    lines = [json.loads(x) for x in out.out.splitlines() if x.startswith("{")]
    assert [(line["handler"], line["TasksStarted"]) for line in lines] == [("price", [1.0, 1.0, 1.0]),
                                                                          ("greeks", [1.0])]
    assert "No application metrics" not in out.err


def test_a_start_after_a_quiet_second_is_told_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    starts = telemetry.StartCounts("default", every=0.0)
    starts.add("price")
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert line["TasksStarted"] == [1.0]
