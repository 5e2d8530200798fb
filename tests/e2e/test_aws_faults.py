"""The chaos graph and a failure cascade under AWS's own faults, in every process of the stack.

A dedicated local stack injects, below Skyloom (:mod:`skyloom.local.faults`): 10 % of DynamoDB
transactions cancelled by a ``TransactionConflict``, 5 % of all AWS calls (and of the SDK's
requests to the API) answered 500/503, and a 3 s network blackout of one random process of the
stack every 20 s. On it run the chaos test's pairwise reduction tree (every inner task waits on two
others) and a failure cascade (tasks that fail for real, each with a chain of dependents that must
be cancelled). Then:

- every task ended exactly once, in the state its own code earns: the tree Completed by one
  attempt each, the failing tasks in Error after exactly their real attempts, the chains Cancelled;
- every answer is right and every waiter returned (the sum, the root failure named);
- no attempt was charged to a task for AWS's fault: a task's attempts show only its own failures
  (no ``WorkerLost``, ``InputFetchFailed`` or other AWS-made attempt);
- faults did fire in the processes of the stack (their counts are printed with the wall time; a
  blackout counts only when it falls on a process that calls AWS meanwhile).

Timing is printed, never asserted (machines are noisy). ``SKYLOOM_TEST_FAULTS_CLEAN=1`` runs the same
test with injection off, for the baseline of the comparison.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

import skyloom
from skyloom.core.config import Settings
from skyloom.local import LocalStack, faults
from skyloom.local.faults import FaultConfig
from tests.e2e.stacks import connect

pytestmark = pytest.mark.slow

#: 64 leaves + 63 pairwise sums (127 tasks) and 16 failing tasks with chains of 4 (80 tasks).
LEAVES = int(os.environ.get("SKYLOOM_TEST_FAULTS_LEAVES", "64"))
CHAINS = int(os.environ.get("SKYLOOM_TEST_FAULTS_CHAINS", "16"))
CHAIN_LENGTH = 4
FAILING_RETRIES = 1
TIMEOUT = 600.0
#: The rates of the issue: AWS's faults at about the rate a busy system meets them in a bad hour.
RATES = FaultConfig(transaction_conflict=0.10, server_error=0.05, blackout_seconds=3.0, blackout_every=20.0,
                    seed=int(os.environ.get("SKYLOOM_TEST_FAULTS_SEED", "17")))
#: A 6 s lease against a 3 s blackout: a cut-off agent keeps its leases (production: 60 s).
FAULTS_SETTINGS = Settings(lease_seconds=6, redispatch_after_seconds=3, finalize_after_seconds=2, visibility_timeout=20)
#: What an attempt may end as when only the task's own code is to blame.
REAL_FAILURES = {"ValueError"}


@skyloom.task(max_retries=3)
def leaf(i: int) -> int:
    return i


@skyloom.task(max_retries=3)
def plus(a: int, b: int) -> int:
    return a + b


@skyloom.task(max_retries=FAILING_RETRIES)
def doomed(i: int) -> int:
    raise ValueError(f"trade {i} is malformed")


@skyloom.task(max_retries=3)
def after(x: int) -> int:
    return x + 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    clean = os.environ.get("SKYLOOM_TEST_FAULTS_CLEAN") == "1"
    s = LocalStack(
        workers=3,
        settings=FAULTS_SETTINGS,
        sweep_interval=1.0,
        run_dir=tmp_path_factory.mktemp("aws-faults-stack"),
        worker_env={"SKYLOOM_WORKER_SLOTS": "2", "SKYLOOM_WORKER_PREFETCH": "1"},
        faults=FaultConfig() if clean else RATES,
    )
    with s:
        yield s


def _tasks_of(session_id: str) -> list[Any]:
    from skyloom.core.models import TaskModel

    with faults.injecting(FaultConfig()):  # the test's own reading is not under test
        return list(TaskModel.by_session.query(session_id, consistent_read=False))


@pytest.mark.timeout(900)
def test_graph_and_cascade_end_once_with_right_answers_under_aws_faults(stack: LocalStack) -> None:
    client = connect(stack)
    started = time.monotonic()
    try:
        with client.session(name="aws-faults") as session:
            # GIVEN the chaos graph and a cascade, submitted while AWS misbehaves
            level = [leaf.submit(i) for i in range(LEAVES)]
            while len(level) > 1:
                pairs = [plus.submit(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
                level = pairs + ([level[-1]] if len(level) % 2 else [])
            roots = [doomed.submit(i) for i in range(CHAINS)]
            chains = []
            for root in roots:
                link = root
                for _ in range(CHAIN_LENGTH - 1):
                    link = after.submit(link)
                chains.append(link)
            session.flush()

            # WHEN every waiter waits
            answer = level[0].result(timeout=TIMEOUT)
            aborted = []
            for end in chains:
                with pytest.raises(skyloom.DependencyAborted) as err:
                    end.result(timeout=TIMEOUT)
                aborted.append(err.value)
            failed = []
            for root in roots:
                with pytest.raises(skyloom.TaskFailed) as failure:
                    root.result(timeout=TIMEOUT)
                failed.append(failure.value)
            elapsed = time.monotonic() - started
        session_id = session.session_id
    finally:
        client.close()
    time.sleep(3.0)  # every process dumps its counts every 2 s
    fired = stack.fault_counts()
    print(f"\n{LEAVES * 2 - 1 + CHAINS * CHAIN_LENGTH} tasks in {elapsed:.1f} s under {stack.faults}; "
          f"faults fired: { {kind: sum(ops.values()) for kind, ops in fired.items()} }\n{fired}")

    # THEN every answer is right, and every waiter learned the root failure
    assert answer == sum(range(LEAVES))
    root_task_ids = {f.task_id for f in failed}
    assert len(root_task_ids) == CHAINS
    assert {a.task_id for a in aborted} == root_task_ids
    assert all("ValueError" in str(a) for a in aborted)
    assert [f.attempts for f in failed] == [FAILING_RETRIES + 1] * CHAINS

    # ... every task ended once, in the state its own code earns, charged only its real failures
    items = _tasks_of(session_id)
    assert len(items) == LEAVES * 2 - 1 + CHAINS * CHAIN_LENGTH
    charged = {t.task_id: [(a["outcome"], a.get("error_type")) for a in t.attempts or []] for t in items}
    for t in items:
        if t.task_id in root_task_ids:
            assert t.status == "Error", t.task_id
            assert charged[t.task_id] == [("error", "ValueError")] * (FAILING_RETRIES + 1), charged[t.task_id]
        elif str(t.label).endswith(".after"):
            assert t.status == "Cancelled", t.task_id
            assert charged[t.task_id] == [], charged[t.task_id]
        else:
            assert t.status == "Completed", (t.task_id, t.status)
            assert charged[t.task_id] == [("completed", None)], charged[t.task_id]
    if stack.faults.enabled:  # (a blackout fires only if it falls on a process busy at the time)
        assert fired.get("transaction_conflict") and fired.get("server_error"), fired

