"""The preemption benchmark runs end to end: both runs complete every task while workers are
reclaimed, and the report says what each run did (no timing is asserted: the machine is shared)."""

from __future__ import annotations

import pytest

from skyloom.bench.preemption import PreemptionConfig, run_preemption

pytestmark = pytest.mark.slow


def test_both_runs_complete_and_only_the_checkpointing_one_resumes() -> None:
    # One round, 1 s in: every task sleeps 2 s in all, so the run is still going when it comes.
    config = PreemptionConfig(tasks=3, steps=4, step_seconds=0.5, workers=2, share=0.5, every=1.0, rounds=1,
                              grace_seconds=0.5, timeout=600.0)
    report = run_preemption(config)
    with_ckpt, without = report["runs"]["with_checkpoints"], report["runs"]["without_checkpoints"]
    for run in (with_ckpt, without):
        assert run["tasks"] == 3 and run["reclaims"] == 1
        assert run["steps_run"] >= run["steps_needed"] == 12  # a step lost to a reclaim is run again
    assert with_ckpt["checkpoints_taken"] >= 12  # one a step, and the reclaim notices'
    assert without["resumes"] == 0 and without["checkpoints_taken"] == 0
