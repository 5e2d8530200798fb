"""The measurements store on moto: idempotent records, last values only moving forward, run-time
windows written once and summarised, and the /metrics routes' validation and tenant scoping."""

from __future__ import annotations

import time
from typing import Any

import pytest

from skyloom.core import measurements
from skyloom.core.config import Settings
from skyloom.core.measurements import WINDOW_SECONDS, Histogram, bucket_bound, bucket_of
from skyloom.core.models import MeasurementModel
from skyloom.runtime.outcome import Recorded
from skyloom_server.fargate_worker.agent import Agent
from skyloom_server.fargate_worker.durations import DurationBook
from skyloom_server.fargate_worker.settings import WorkerSettings
from tests.functional.conftest import IDENTITY_A, ApiClient, b64
from tests.functional.test_worker_task_faults import call_payload, plus_one

OWNER = IDENTITY_A


def _record(settings: Settings, values: list[Recorded], attempt: int = 1, task: str = "t1") -> None:
    measurements.record(settings, owner=OWNER, session_id="s1", task_id=task, attempt=attempt, values=values)


def test_record_is_idempotent_and_the_last_value_only_moves_forward(aws_stack: Settings) -> None:
    first = [Recorded("TRD-1", "sec", 1.0, 100.0), Recorded("TRD-1", "sec", 2.0, 101.0)]
    _record(aws_stack, first)
    _record(aws_stack, first)  # a replayed commit writes nothing twice
    assert [v.value for v in measurements.history(OWNER, "TRD-1", "sec", limit=10)] == [2.0, 1.0]
    # An older attempt committing late does not hide the newer value
    _record(aws_stack, [Recorded("TRD-1", "sec", 9.0, 50.0)], attempt=1, task="t0")
    assert measurements.latest(OWNER, [("TRD-1", "sec")])[("TRD-1", "sec")].value == 2.0
    assert [v.value for v in measurements.history(OWNER, "TRD-1", "sec", limit=10)] == [2.0, 1.0, 9.0]
    assert [v.value for v in measurements.history(OWNER, "TRD-1", "sec", limit=10, before=101.0)] == [1.0, 9.0]
    item = MeasurementModel.get(f"{OWNER}#TRD-1", "latest#sec")
    assert item.expires_at == int(101.0 + aws_stack.metrics_retention_days * 86400)  # its own retention (TTL)


def test_histogram_buckets_bound_percentiles_within_a_quarter() -> None:
    for seconds in (0.0005, 0.002, 0.5, 3.0, 40.0, 7200.0):
        b = bucket_of(seconds)
        assert seconds <= bucket_bound(b) <= max(seconds, 0.001) * 1.25 + 1e-12


def test_worker_minutes_are_written_once_and_summarised(aws_stack: Settings) -> None:
    now = [1_000_020.0]
    book = DurationBook(aws_stack, worker_id="w1", partition="default", clock=lambda: now[0])
    for s in (1.0, 1.0, 2.0, 4.0):
        book.add(OWNER, "mod.price", s)
    assert book.flush() == 0  # the minute is still open
    now[0] += WINDOW_SECONDS
    book.add(OWNER, "mod.price", 8.0)
    assert book.flush() == 1 and book.flush(everything=True) == 1
    h = Histogram()
    h.add(3.0)
    assert not measurements.add_durations(aws_stack, owner=OWNER, label="mod.price", window=1_000_020, worker="w1",
                                          hist=h)  # that minute of that worker exists: not written again
    stats = measurements.duration_stats(OWNER, "mod.price", since=now[0] - 600, until=now[0] + 60)
    assert stats.count == 5 and stats.mean == pytest.approx(16 / 5) and stats.max == 8.0
    assert [w.count for w in stats.windows] == [4, 1]
    assert stats.moving_average == pytest.approx(16 / 5)
    assert stats.p50 is not None and 2.0 <= stats.p50 <= 2.5
    assert stats.p99 is not None and 8.0 <= stats.p99 <= 10.0
    assert measurements.duration_stats("someone-else", "mod.price", since=0, until=now[0] + 60).count == 0


def test_routes_validate_and_scope_by_identity(api: ApiClient, aws_stack: Settings) -> None:
    _record(aws_stack, [Recorded("TRD-9", "sec", 3.0, 200.0)])
    ok = api.call("POST", "/metrics/latest", {"pairs": [["TRD-9", "sec"], ["TRD-9", "none"]]})
    assert ok.status == 200 and [v["value"] for v in ok.json["values"]] == [3.0]
    assert api.call("GET", "/metrics/TRD-9").json["latest"][0]["value"] == 3.0
    assert api.call("GET", "/metrics/TRD-9/sec?limit=5").json["values"][0]["value"] == 3.0
    # Another identity reads its own measurements: none
    assert api.call("POST", "/metrics/latest", {"pairs": [["TRD-9", "sec"]]}, identity=api.B).json["values"] == []
    assert api.call("GET", "/metrics/TRD-9", identity=api.B).json["latest"] == []
    bad: list[tuple[str, str, Any, str]] = [
        ("POST", "/metrics/latest", {"pairs": [["TRD#9", "sec"]]}, "pairs"),
        ("POST", "/metrics/latest", {"pairs": []}, "pairs"),
        ("GET", "/metrics/TRD-9/sec?limit=0", None, "limit"),
        ("GET", "/durations", None, "label"),
    ]
    for method, path, body, field in bad:
        r = api.call(method, path, body)
        assert r.status == 400 and field in (r.json.get("field") or ""), (path, r.status, r.raw_body)
    assert api.call("GET", "/pricing").json["rates"]["default"]["spot"] is True


def test_an_agent_keeps_run_time_history_of_what_it_completed(api: ApiClient, aws_stack: Settings) -> None:
    # GIVEN two tasks of one function, labelled as the SDK labels them
    sid = api.session()
    for i in range(2):
        r = api.call("POST", f"/sessions/{sid}/tasks", {
            "results": [{"id": f"out-{i}"}],
            "tasks": [{"handler": "skyloom.call", "label": "pricing.plus_one", "expected_outputs": [f"out-{i}"],
                       "payload": b64(call_payload(plus_one, i))}],
        })
        assert r.status == 201, r.raw_body
    # WHEN an agent runs them and stops
    assert Agent(aws_stack, WorkerSettings(slots=1, prefetch=0, burst=True)).run() == 0
    # THEN the minute it held is written at its stop, under the caller's identity and the function
    stats = measurements.duration_stats(OWNER, "pricing.plus_one", since=time.time() - 600, until=time.time() + 60)
    assert stats.count == 2 and stats.mean is not None and stats.mean >= 0
    answer = api.call("GET", "/durations?label=pricing.plus_one").json
    assert answer["count"] == 2 and answer["p50"] is not None
    assert api.call("GET", "/durations?label=skyloom.call").json["count"] == 2  # and per handler
