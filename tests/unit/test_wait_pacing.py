"""The wait route's re-check pace: a quarter of the quiet time, from 10 ms to one second."""

from __future__ import annotations

import pytest

from skyloom.core.results import RECHECK_FIRST_SECONDS, RECHECK_MAX_SECONDS, recheck_pause


@pytest.mark.parametrize(("quiet", "pause"), [(0.0, RECHECK_FIRST_SECONDS), (0.02, RECHECK_FIRST_SECONDS),
                                              (0.2, 0.05), (2.0, 0.5), (60.0, RECHECK_MAX_SECONDS)])
def test_a_wait_rechecks_after_a_quarter_of_its_quiet_time(quiet: float, pause: float) -> None:
    assert recheck_pause(quiet) == pytest.approx(pause)
