"""When the sweeper re-sends the message of a task that is still queued (a pure rule)."""

from __future__ import annotations

import math

from skyloom.core.dispatching import MAX_REDISPATCH_INTERVAL_SECONDS, redispatch_interval

BASE = 300.0


def test_a_message_lost_at_send_time_is_resent_after_the_base_interval() -> None:
    assert redispatch_interval(BASE, 0.0) == BASE
    assert redispatch_interval(BASE, BASE) == BASE


def test_the_interval_grows_with_the_wait_so_copies_grow_with_its_logarithm() -> None:
    waited, copies = BASE, 0
    while waited < 8 * 3600:  # an 8-hour backlog
        waited += redispatch_interval(BASE, waited)
        copies += 1
    assert copies <= math.ceil(math.log2(8 * 3600 / BASE)) + 1  # a fixed interval: 96 copies


def test_the_interval_is_capped_well_inside_the_queue_retention() -> None:
    assert redispatch_interval(BASE, 30 * 24 * 3600.0) == MAX_REDISPATCH_INTERVAL_SECONDS
    assert MAX_REDISPATCH_INTERVAL_SECONDS < 14 * 24 * 3600 / 2
