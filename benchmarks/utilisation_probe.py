"""Where the utilisation workload's time goes: runs it a few times on one local stack and splits each
run's wall time from the agents' logs.

    python benchmarks/utilisation_probe.py [--runs 3] [--tasks 200] [--seconds 0.1] [--workers 4]

For each run: the utilisation the client sees (tasks x seconds / (workers x wall)), how long the
client took to build the submissions, when the first task started, how long after the last task
ended the client had every value, and per worker: its first start, the sum of its tasks' compute
times (the sleep plus the child's round trip), the gaps between its tasks, and how long before the
last task of all its own last one ended. The first run meets workers that have not run the task's
function yet; the later ones, warm workers (a second apart).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import skyloom  # noqa: E402
from benchmarks.peers import skyloom_tasks  # noqa: E402
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack  # noqa: E402

#: (start, end) of one task's compute, in epoch seconds.
Span = tuple[float, float]


def task_spans(log: Path, since: float, until: float) -> list[Span]:
    """The compute spans of the tasks a worker completed between ``since`` and ``until``."""
    spans: list[Span] = []
    for line in log.read_text().splitlines():
        if '"task completed"' not in line:
            continue
        entry = json.loads(line)
        logged = datetime.datetime.strptime(entry["timestamp"][:23], "%Y-%m-%d %H:%M:%S,%f")
        metrics = entry["metrics"]
        end = logged.replace(tzinfo=datetime.UTC).timestamp() - metrics.get("upload", 0.0)
        start = end - metrics.get("compute", 0.0)
        if since <= start <= until:
            spans.append((start, end))
    return sorted(spans)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--seconds", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args()
    runs: list[tuple[float, float, float]] = []
    with LocalStack(workers=args.workers, worker_env={"SKYLOOM_WORKER_SLOTS": "1"}) as stack:
        client = skyloom.connect(stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
        session = client.session(name="utilisation-probe")
        with session:
            skyloom_tasks.work.submit(0.0).result(timeout=120)  # the harness's warm-up: one task
        for _ in range(args.runs):
            with session:
                began = time.time()
                futures = [skyloom_tasks.work.submit(args.seconds) for _ in range(args.tasks)]
                built = time.time()
                session.wait(futures, timeout=600)
                for f in futures:
                    f.result(timeout=600)
                runs.append((began, built, time.time()))
            time.sleep(1.0)
        logs = sorted(stack.run_dir.glob("worker-*.log"))
        client.close()
    for began, built, done in runs:
        per = {log.name: task_spans(log, began, done) for log in logs}
        spans = [s for each in per.values() for s in each]
        first, last = min(s[0] for s in spans), max(s[1] for s in spans)
        wall = done - began
        print(f"utilisation {args.tasks * args.seconds / (args.workers * wall):.4f}  wall {wall:.3f} s  "
              f"built {built - began:.3f}  first start +{first - began:.3f}  last value -{done - last:.3f} after "
              f"the last end  tasks {len(spans)}")
        for name, own in per.items():
            if not own:
                continue
            gaps = [own[i + 1][0] - own[i][1] for i in range(len(own) - 1)]
            compute = sum(e - s for s, e in own)
            print(f"    {name}: {len(own)} tasks, first +{own[0][0] - began:.3f}, compute {compute:.3f} s, "
                  f"gaps {sum(gaps):.3f} s, last end {last - own[-1][1]:.3f} s before the last")
    return 0


if __name__ == "__main__":
    sys.exit(main())
