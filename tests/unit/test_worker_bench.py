"""The pure parts of ``skyloom bench``: options, percentiles, API call arithmetic, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyloom.bench import BenchConfig, runner


def test_config_rejects_unknown_shapes_and_modes() -> None:
    with pytest.raises(ValueError, match="shape"):
        BenchConfig(shape="ring")
    with pytest.raises(ValueError, match="mode"):
        BenchConfig(mode="spin")
    with pytest.raises(ValueError):
        BenchConfig(tasks=0)


def test_nearest_rank_percentiles() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert runner._pct(samples, 50) == 50.0
    assert runner._pct(samples, 99) == 99.0
    assert runner._pct([3.0], 99) == 3.0


def test_calls_are_summed_over_processes_and_diffed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "SETTLE_SECONDS", 0.0)
    for pid, n in ((1, 2), (2, 3)):
        (tmp_path / f"calls-{pid}.json").write_text(json.dumps({"calls": {"sqs": {"ReceiveMessage": n}}}))
    (tmp_path / "calls-3.json").write_text("{broken")
    total = runner._total_calls(tmp_path)
    assert total == {"sqs": {"ReceiveMessage": 5}}
    assert runner._diff({"sqs": {"ReceiveMessage": 5, "DeleteMessage": 1}}, total) == {"sqs": {"DeleteMessage": 1}}


def test_summary_mentions_every_figure() -> None:
    report = {
        "throughput": {"tasks": 10, "submission_tasks_per_s": 5.0, "processing_tasks_per_s": 2.0,
                       "end_to_end_tasks_per_s": 1.5, "busy_fraction": 0.5},
        "latency_seconds": {"1": {"p50": 0.1, "p90": 0.2, "p99": 0.3}},
        "api_calls_per_task": {"sqs": {"ReceiveMessage": 1.5}, "dynamodbstreams": {"GetRecords": 0.25}},
        "api_calls_total_per_task": 1.75,
        "api_calls_excluding_streams_per_task": 1.5,
        "forkjoin": {"tasks": 240, "end_to_end_tasks_per_s": 30.0, "api_calls_total_per_task": 2.75,
                     "api_calls_excluding_streams_per_task": 2.5, "api_calls_per_task": {}},
    }
    text = runner.summary(report)
    assert "processing: 2.0/s" in text and "batch of 1" in text and "ReceiveMessage 1.5" in text
    assert "AWS API calls per task: 1.5 (1.75 with DynamoDB Streams polling)" in text
    assert "fork-join, 240 tasks" in text and "AWS API calls per task 2.5 (2.75" in text


def test_calls_report_sets_stream_polling_apart() -> None:
    calls = {"sqs": {"ReceiveMessage": 10}, "dynamodbstreams": {"GetRecords": 5, "DescribeStream": 1}}
    report = runner._calls_report(calls, 10)
    assert report["api_calls_total_per_task"] == 1.6 and report["api_calls_excluding_streams_per_task"] == 1.0


def test_preemption_config_rejects_what_cannot_run_and_its_summary_shows_both_runs() -> None:
    from skyloom.bench.preemption import PreemptionConfig, summary

    for bad in ({"share": 0.0}, {"share": 1.5}, {"tasks": 0}, {"every": 0.0}, {"grace_seconds": -1.0}):
        with pytest.raises(ValueError):
            PreemptionConfig(**bad)  # type: ignore[arg-type]
    run = {"tasks": 8, "end_to_end_seconds": 20.0, "tasks_per_s": 0.4, "steps_needed": 80, "steps_run": 80,
           "steps_lost": 0, "reclaims": 8, "resumes": 5, "checkpoints_taken": 85}
    text = summary({"config": {"tasks": 8, "steps": 10, "step_seconds": 0.5, "workers": 4, "share": 0.5,
                               "every": 3.0, "rounds": 4, "grace_seconds": 1.0},
                    "runs": {"with_checkpoints": run, "without_checkpoints": {**run, "steps_run": 95, "resumes": 0}}})
    assert "with checkpoints: 0.4 tasks/s" in text and "steps run 95 of 80 needed" in text
    assert "50% of them reclaimed every 3.0 s" in text
