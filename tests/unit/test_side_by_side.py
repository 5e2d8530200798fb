"""The side-by-side table: with several rounds, medians, and the median of the rounds' own ratios."""

from __future__ import annotations

from typing import Any

from benchmarks.side_by_side import table


def runs(skyloom: float | None, celery: float) -> dict[str, Any]:
    sky = {"tasks_per_s": skyloom} if skyloom is not None else {"error": "RuntimeError: boom"}
    return {"throughput-1000": {"skyloom": sky, "celery": {"tasks_per_s": celery}}}


def report(*rounds: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"config": {"systems": ["skyloom", "celery"]},
                           "workloads": {"throughput-1000": "1,000 tasks"}, "runs": rounds[0]}
    if len(rounds) > 1:
        out["rounds"] = list(rounds)
    return out


def test_one_round_shows_its_figures_and_ratio() -> None:
    assert table(report(runs(200, 100))).splitlines()[-1] == (
        "| 1,000 tasks | tasks/s | 200 | 100 | 2.00 (higher is better) |")


def test_rounds_show_each_systems_median_and_the_median_of_the_rounds_ratios() -> None:
    # Medians 250 and 100 would say 2.50; the rounds' own ratios (2.00, 3.00, 1.67) say 2.00.
    line = table(report(runs(200, 100), runs(300, 100), runs(250, 150))).splitlines()[-1]
    assert line == "| 1,000 tasks | tasks/s | 250 | 100 | 2.00 (median of 3 rounds, 1.67-3.00; higher is better) |"


def test_a_failed_run_leaves_its_round_out_of_the_ratio() -> None:
    line = table(report(runs(None, 100), runs(300, 100), runs(250, 100))).splitlines()[-1]
    assert line == "| 1,000 tasks | tasks/s | 275 | 100 | 2.75 (median of 2 rounds, 2.50-3.00; higher is better) |"
