"""The wait route's re-check pace: a quarter of the quiet time (or of the time left at the pace seen),
from 5 ms to one second."""

from __future__ import annotations

import pytest

from skyloom.core.results import RECHECK_FIRST_SECONDS, RECHECK_MAX_SECONDS, recheck_pause


@pytest.mark.parametrize(("quiet", "pause"), [(0.0, RECHECK_FIRST_SECONDS), (0.02, RECHECK_FIRST_SECONDS),
                                              (0.2, 0.05), (2.0, 0.5), (60.0, RECHECK_MAX_SECONDS)])
def test_a_wait_rechecks_after_a_quarter_of_its_quiet_time(quiet: float, pause: float) -> None:
    assert recheck_pause(quiet) == pytest.approx(pause)


@pytest.mark.parametrize(("pending", "rate", "pause"), [
    (160, 40.0, RECHECK_MAX_SECONDS),  # 4 s to go: a check a second
    (20, 40.0, 0.125),  # half a second to go: a quarter of it
    (1, 100.0, RECHECK_FIRST_SECONDS),  # the last one: followed closely
    (50, 0.0, RECHECK_FIRST_SECONDS),  # no pace known yet: the quiet rule
])
def test_an_all_wait_rechecks_after_a_quarter_of_the_time_its_pending_results_should_take(
        pending: int, rate: float, pause: float) -> None:
    assert recheck_pause(0.0, pending=pending, rate=rate) == pytest.approx(pause)
