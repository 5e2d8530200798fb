"""Run a command and report the CPU seconds its descendant processes used, by kind.

Where a local run's CPU goes (the emulator, the agents, the submit containers, the process that runs
the stream poller and the client, the task processes), read from ``/proc`` every 0.2 s, so that a
figure in benchmarks/README.md can say what binds. Linux only.

    python benchmarks/cpu_by_process.py skyloom bench --tasks 1000 --workers 2 --slots 1 \\
        --latency-batches "" --forkjoin-tasks 0
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return found


def _tree(root: int) -> list[int]:
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += _children(pid)
    return seen


def _kind(cmdline: str, pid: int, root: int) -> str:
    if pid == root:
        return "command (stream poller, functions, client)"
    for needle, kind in (("gunicorn", "emulator"), ("containers", "submit containers"),
                         ("fargate_worker", "agents"), ("spawn", "task processes")):
        if needle in cmdline:
            return kind
    return cmdline[:40] or "other"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    proc = subprocess.Popen(argv)
    last: dict[int, tuple[str, float]] = {}

    def poll() -> None:
        while proc.poll() is None:
            for pid in _tree(proc.pid):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{pid}/cmdline") as f:
                        cmdline = f.read().replace("\0", " ")
                except OSError:
                    continue
                cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
                last[pid] = (cmdline or last.get(pid, ("", 0.0))[0], cpu)
            time.sleep(0.2)

    watcher = threading.Thread(target=poll)
    watcher.start()
    code = proc.wait()
    watcher.join()
    by_kind: collections.Counter[str] = collections.Counter()
    for pid, (cmdline, cpu) in last.items():
        by_kind[_kind(cmdline, pid, proc.pid)] += cpu
    print("CPU seconds by process kind: " + ", ".join(f"{k} {v:.1f}" for k, v in by_kind.most_common())
          + f"; total {sum(by_kind.values()):.1f}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
