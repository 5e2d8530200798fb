"""``examples/adaptive_sizing.py`` on the local stack, briefly: the first session probes, the next
one sizes its tasks from what the first recorded (no timing is asserted: only that it sized from
history, as the formula says)."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import skyloom

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adaptive_sizing.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tests.e2e.adaptive_sizing_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_second_session_sizes_tasks_from_the_first(local_stack: Any, client: skyloom.Client,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ex = _example()
    trades = ex.make_trades(f"MC-{uuid.uuid4().hex[:8]}", 2)
    total, target = 3 * ex.PROBE_PATHS, 0.05
    first = ex.run_session(client, trades, total, target)
    assert {r.paths_per_task for r in first} == {ex.PROBE_PATHS} and all(len(r.task_seconds) == 3 for r in first)
    # The history the next session sizes from is the last chunk's time per path, under each trade's id.
    recorded = {t.trade_id: client.metrics.latest(t.trade_id, ex.METRIC) for t in trades}
    assert all(v is not None and v.value > 0 for v in recorded.values())
    second = ex.run_session(client, trades, total, target)
    for r in second:
        per_path = recorded[r.trade_id].value  # type: ignore[union-attr]
        assert r.paths_per_task == ex.paths_per_task(per_path, target, total)
        assert sum(1 for _ in r.task_seconds) == -(-total // r.paths_per_task)
        assert r.value > 0 and r.stderr >= 0
    # The command-line entry runs too (one short session), against the test's stack.
    monkeypatch.setenv("SKYLOOM_ENDPOINT", local_stack.endpoint)
    assert ex.main(["--sessions", "1", "--paths", "1000", "--trades", "1", "--target", "0.05",
                    "--prefix", f"MC-{uuid.uuid4().hex[:8]}"]) == 0
