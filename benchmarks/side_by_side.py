#!/usr/bin/env python3
"""Skyloom side by side with Celery (and Dask as a reference), on this machine, in one run.

    benchmarks/side_by_side.py                         # everything: 1,000 and 10,000 tasks, all systems
    benchmarks/side_by_side.py --only throughput --tasks 1000
    benchmarks/side_by_side.py --quick                 # small sizes, a few minutes
    benchmarks/side_by_side.py --systems skyloom,celery --only latency,treesum

Every workload runs on a fresh instance of each system, one system after the other, timed by the
client in the same way (see ``benchmarks/peers/common.py``):

- Skyloom: its local stack (moto in server mode, two processes: SQS, and DynamoDB with S3; the
  functions; N agents of one slot each), started by its driver with the project's Python;
- Celery 5 with its defaults, N ``celery worker -c 1`` processes, broker SQS on the same emulator
  (moto behind gunicorn, started here with Skyloom's own launcher, :mod:`skyloom.local.emulator`, on
  a free loopback port), result backend Redis (``redis-server`` on a free loopback port);
- Dask distributed (optional): a ``LocalCluster`` of N single-thread worker processes.

On a shared host one run of a system can be a fifth faster or slower than the next (Celery did 107
to 191 tasks/s on the same 1,000 tasks in one evening): ``--rounds N`` runs each workload N times,
the systems back to back in alternating order, and the table shows each system's median and the
median of the rounds' ratios with their range (a round's two runs are a minute apart, so its ratio
sees nearly the same host).

The peers run from their own venvs, ``benchmarks/.peer-venv/<name>``, built here from the pinned
``benchmarks/peers/requirements-<name>.txt`` (rebuilt when the file changes); ``redis-server`` is
installed with apt-get if missing (as root). Nothing listens outside 127.0.0.1.

Output: a JSON report (``--output``) and a markdown table with the ratio Skyloom / Celery. Every
process started here is stopped at the end of its run, on error and on Ctrl-C or SIGTERM too: each
runs in its own process group, and every process that carries this run's marker in its environment
is ended at the end of each run (so nothing that a driver started outlives it either).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "benchmarks" / "peers"
PEER_VENVS = REPO / "benchmarks" / ".peer-venv"
SYSTEMS = ("skyloom", "celery", "dask")
WORKLOADS = ("throughput", "latency", "utilisation", "treesum")
#: Environment variable every process of a run inherits: the final sweep ends whoever carries it.
MARKER_ENV = "SIDE_BY_SIDE_RUN"
RESULT_PREFIX = "SIDE-BY-SIDE-RESULT "
#: Seconds a process gets between SIGTERM and SIGKILL.
STOP_GRACE = 15.0
#: Seconds to wait for a peer's services (emulator, Redis) to answer.
START_TIMEOUT = 60.0


# ------------------------------------------------------------------------------------ processes
def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def _marked_pids(token: str) -> list[int]:
    """PIDs of the processes whose environment holds this run's marker (not this process)."""
    needle = f"{MARKER_ENV}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def sweep(token: str, grace: float = STOP_GRACE) -> list[str]:
    """End every process of this run still alive: SIGTERM, then SIGKILL after ``grace`` seconds.
    Returns what it had to signal, ``"PID command"`` each (normally nothing: each run stops its own)."""
    pids = {pid: _proc_start_time(pid) for pid in _marked_pids(token)}
    signalled = [f"{pid} {_cmdline(pid)[:160]}" for pid in sorted(pids)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_proc_start_time(p) == s for p, s in pids.items()):
        time.sleep(0.2)
    for pid, started in pids.items():
        if started is not None and _proc_start_time(pid) == started:  # the same process, not a reused PID
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return signalled


@dataclass
class Child:
    """A process started in its own process group, its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @classmethod
    def start(cls, name: str, command: Sequence[str], env: dict[str, str], log_path: Path,
              stdout: IO[bytes] | None = None) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            process = subprocess.Popen(
                list(command), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                stdout=stdout or log, stderr=log, start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        return cls(name, process, log)

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; returns the exit status."""
        try:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(grace)
            # Whatever is left in the group (children that ignored SIGTERM) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5.0)
            return self.process.poll()
        finally:
            self.log.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- peers' software
def peer_python(name: str, base_python: str) -> Path:
    """The Python of ``benchmarks/.peer-venv/<name>``, built from its pinned requirements first if
    the venv is missing or the file changed since it was built."""
    requirements = PEERS / f"requirements-{name}.txt"
    venv = PEER_VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"[side-by-side] building {venv.relative_to(REPO)} from {requirements.relative_to(REPO)}", flush=True)
    if not python.exists():
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
    log = PEER_VENVS / f"{name}-install.log"
    with open(log, "wb") as out:
        done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                               "-r", str(requirements)], stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"pip could not build {venv}; see {log}")
    stamp.write_text(digest + "\n")
    return python


def redis_server() -> str:
    """Path of ``redis-server``; installed from Debian's packages when missing and we are root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("[side-by-side] installing redis-server with apt-get", flush=True)
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"]
        if subprocess.run(install, stdout=subprocess.DEVNULL, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=900)
            subprocess.run(install, check=True, stdout=subprocess.DEVNULL, timeout=900)
        found = shutil.which("redis-server")
    if not found:
        raise SystemExit("Celery's result backend needs redis-server (Debian: apt-get install redis-server)")
    return found


def pinned(name: str) -> dict[str, str]:
    pins = {}
    for line in (PEERS / f"requirements-{name}.txt").read_text().splitlines():
        pkg, sep, version = line.strip().partition("==")
        if sep and not pkg.startswith("#"):
            pins[pkg.lower()] = version
    return pins


# ------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    workers: int
    args: tuple[str, ...]


def plan(opts: argparse.Namespace) -> list[Workload]:
    only = [w.strip() for w in opts.only.split(",") if w.strip()] if opts.only else list(WORKLOADS)
    for w in only:
        if w not in WORKLOADS:
            raise SystemExit(f"--only: unknown workload {w!r}; choose among {', '.join(WORKLOADS)}")
    quick = opts.quick
    tasks = [int(t) for t in (opts.tasks or ("200" if quick else "1000,10000")).split(",") if t.strip()]
    repeats = opts.repeats or (3 if quick else 5)
    util_tasks = opts.util_tasks or (40 if quick else 200)
    tree = opts.tree or ("0,128,8" if quick else "0,512,8")
    w = str(opts.workers)
    out: list[Workload] = []
    for name in only:
        if name == "throughput":
            out += [Workload(f"throughput-{n}", f"{n:,} zero-work independent tasks, end to end", opts.workers,
                             ("--workload", "throughput", "--tasks", str(n), "--workers", w)) for n in tasks]
        elif name == "latency":
            out.append(Workload("latency", "submit -> results latency on an idle system", opts.workers,
                                ("--workload", "latency", "--batches", opts.batches, "--repeats", str(repeats),
                                 "--workers", w)))
        elif name == "utilisation":
            out.append(Workload("utilisation", f"{util_tasks} tasks of {opts.util_seconds * 1000:g} ms on "
                                f"{opts.util_workers} single-slot workers", opts.util_workers,
                                ("--workload", "utilisation", "--tasks", str(util_tasks), "--seconds",
                                 str(opts.util_seconds), "--workers", str(opts.util_workers))))
        else:
            out.append(Workload("treesum", f"recursive tree sum {tree} (lo,hi,leaf)", opts.workers,
                                ("--workload", "treesum", "--tree", tree, "--workers", w)))
    return out


# ----------------------------------------------------------------------------------- the runs
@dataclass
class Run:
    opts: argparse.Namespace
    token: str
    out_dir: Path
    pythons: dict[str, Path] = field(default_factory=dict)
    redis: str | None = None

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                                                                 "AWS_SESSION_TOKEN", "VIRTUAL_ENV")}
        env.update({MARKER_ENV: self.token, "PYTHONUNBUFFERED": "1", "AWS_ACCESS_KEY_ID": "skyloom-local",
                    "AWS_SECRET_ACCESS_KEY": "skyloom-local-secret", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_REGION": "us-east-1"})
        return env

    def one(self, system: str, workload: Workload, round_no: int = 0) -> dict[str, Any]:
        run_dir = self.out_dir / (f"{workload.key}-{system}" + (f"-round{round_no + 1}" if round_no else ""))
        run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            with self._system(system, workload, run_dir) as (python, env):
                result = self._driver(system, python, env, workload, run_dir)
        except Exception as exc:  # one failed run must not lose the others' figures
            result = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            leftovers = sweep(self.token)
            if leftovers:
                print(f"[side-by-side] ended {len(leftovers)} leftover process(es) of {system}: "
                      + "; ".join(leftovers), flush=True)
        result["run_seconds"] = round(time.monotonic() - started, 1)
        result["logs"] = str(run_dir)
        return result

    @contextlib.contextmanager
    def _system(self, system: str, workload: Workload, run_dir: Path) -> Iterator[tuple[Path, dict[str, str]]]:
        env = self.base_env()
        if system == "skyloom":
            env["PYTHONPATH"] = os.pathsep.join([str(REPO / "sdk"), str(REPO)])
            env["SKYLOOM_HOME"] = str(run_dir / "skyloom-home")
            yield Path(sys.executable), env
            return
        env["PYTHONPATH"] = str(REPO)  # the peers' venvs hold everything else
        if system == "dask":
            yield self.pythons["dask"], env
            return
        with self._celery(workload.workers, run_dir, env) as celery_env:
            yield self.pythons["celery"], celery_env

    @contextlib.contextmanager
    def _celery(self, workers: int, run_dir: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
        from skyloom.local.emulator import Emulator

        children: list[Child] = []
        # Skyloom's own launcher: the same moto server (gunicorn, keep-alive, local fixes) as the
        # local stack's. It inherits this process's environment, marker included.
        emulator = Emulator(run_dir / "emulator")
        try:
            emulator.start(timeout=START_TIMEOUT)
            redis_port = free_port()
            children.append(Child.start("redis", [
                self.redis or "redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
            ], env, run_dir / "redis.log"))
            _wait_redis(redis_port, children[-1])
            ready = run_dir / "ready"
            ready.mkdir(exist_ok=True)
            celery_env = dict(env)
            celery_env.update({"SIDE_BY_SIDE_SQS": emulator.url.removeprefix("http://"),
                               "SIDE_BY_SIDE_REDIS": f"redis://127.0.0.1:{redis_port}/0",
                               "SIDE_BY_SIDE_READY_DIR": str(ready)})
            celery = self.pythons["celery"].parent / "celery"
            for i in range(workers):
                children.append(Child.start(f"celery-worker-{i}", [
                    str(celery), "-A", "benchmarks.peers.celery_app", "worker", "-c", "1", "-n", f"w{i}@%h",
                    "--loglevel", "INFO",
                ], celery_env, run_dir / f"celery-worker-{i}.log"))
            yield celery_env
        finally:
            for child in reversed(children):
                child.stop()
            emulator.stop()

    def _driver(self, system: str, python: Path, env: dict[str, str], workload: Workload,
                run_dir: Path) -> dict[str, Any]:
        command = [str(python), "-m", f"benchmarks.peers.{system}_driver", *workload.args,
                   "--timeout", str(self.opts.run_timeout), "--run-dir", str(run_dir)]
        stdout_path = run_dir / "driver.out"
        print(f"[side-by-side] {workload.key} on {system} ...", flush=True)
        with open(stdout_path, "wb") as stdout:
            child = Child.start(f"{system}-driver", command, env, run_dir / "driver.log", stdout=stdout)
            try:
                status = child.process.wait(self.opts.run_timeout + 120)
            except subprocess.TimeoutExpired:
                status = None
            finally:
                child.stop()
        for line in stdout_path.read_text(errors="replace").splitlines():
            if line.startswith(RESULT_PREFIX):
                result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
                print(f"[side-by-side]   {_brief(result)}", flush=True)
                return result
        tail = (run_dir / "driver.log").read_text(errors="replace").strip().splitlines()[-5:]
        why = "timed out" if status is None else f"exited with status {status}"
        print(f"[side-by-side]   failed: {why}", flush=True)
        return {"error": f"driver {why}: " + " | ".join(tail)}


def _wait_redis(port: int, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {child.process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s")


def _brief(result: dict[str, Any]) -> str:
    if "batches" in result:
        return "p50 " + ", ".join(f"batch {b}: {v['p50']} s" for b, v in result["batches"].items())
    text = f"{result.get('wall_seconds')} s, {result.get('tasks_per_s')} tasks/s"
    if "utilisation" in result:
        text += f", utilisation {result['utilisation']}"
    return text


# ---------------------------------------------------------------------------------- the table
#: One line of the table: label, unit, each system's figure (None: failed), which way is better.
Row = tuple[str, str, dict[str, float | None], str]


def figures(report: dict[str, Any], runs: dict[str, dict[str, Any]]) -> list[Row]:
    """The table's lines for one round's ``runs`` (workload key -> system -> the driver's result)."""
    systems = report["config"]["systems"]
    rows: list[Row] = []

    def value(key: str, system: str, *path: str) -> float | None:
        node: Any = runs.get(key, {}).get(system, {})
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return float(node) if isinstance(node, int | float) else None

    for key, run in runs.items():
        label = report["workloads"][key]
        if key.startswith("throughput-"):
            rows.append((label, "tasks/s", {s: value(key, s, "tasks_per_s") for s in systems}, "higher"))
        elif key == "latency":
            batches = next((r["batches"] for r in run.values() if "batches" in r), {})
            for b in batches:
                rows.append((f"latency p50, batch of {b}", "s",
                             {s: value(key, s, "batches", b, "p50") for s in systems}, "lower"))
        elif key == "utilisation":
            rows.append((label + ", utilisation seen by the client", "",
                         {s: value(key, s, "utilisation") for s in systems}, "higher"))
        elif key == "treesum":
            tasks = next((r["tasks"] for r in run.values() if "tasks" in r), "?")
            rows.append((f"{label}, {tasks} tasks, wall time", "s", {s: value(key, s, "wall_seconds") for s in systems},
                         "lower"))
    return rows


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def table(report: dict[str, Any]) -> str:
    """The markdown table: with several rounds, each system's median figure and the median of the
    rounds' ratios (with their range), so that one lucky or unlucky run does not make the ratio."""
    systems = report["config"]["systems"]
    rounds = [figures(report, runs) for runs in report.get("rounds") or [report["runs"]]]
    names = {"skyloom": "Skyloom", "celery": "Celery", "dask": "Dask"}
    head = "| workload | unit | " + " | ".join(names[s] for s in systems)
    with_ratio = "skyloom" in systems and "celery" in systems
    head += " | Skyloom / Celery |" if with_ratio else " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, (label, unit, _, better) in enumerate(rounds[0]):
        seen = [r[i][2] for r in rounds if i < len(r) and r[i][0] == label]
        medians = {s: _median([x for v in seen if (x := v[s]) is not None]) for s in systems}
        cells = ["failed" if medians[s] is None else f"{medians[s]:g}" for s in systems]
        line = f"| {label} | {unit} | " + " | ".join(cells)
        if with_ratio:
            ratios = sorted(v["skyloom"] / v["celery"] for v in seen if v["skyloom"] is not None and v["celery"])
            ratio = "-"
            if len(ratios) == 1:
                ratio = f"{ratios[0]:.2f} ({better} is better)"
            elif ratios:
                ratio = (f"{statistics.median(ratios):.2f} (median of {len(ratios)} rounds, {ratios[0]:.2f}-"
                         f"{ratios[-1]:.2f}; {better} is better)")
            line += f" | {ratio}"
        lines.append(line + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"workloads to run, comma-separated among {','.join(WORKLOADS)} (default: all)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="systems, comma-separated (default: %(default)s)")
    p.add_argument("--tasks", help="throughput: task counts, comma-separated (default 1000,10000; quick: 200)")
    p.add_argument("--workers", type=int, default=2, help="workers of one slot for throughput, latency and tree "
                   "sum (default: %(default)s)")
    p.add_argument("--batches", default="1,10,100", help="latency: batch sizes (default: %(default)s)")
    p.add_argument("--repeats", type=int, help="latency: samples per batch size (default 5; quick: 3; a batch of "
                   "1 takes at least 20)")
    p.add_argument("--util-tasks", type=int, help="utilisation: tasks (default 200; quick: 40)")
    p.add_argument("--util-seconds", type=float, default=0.1, help="utilisation: each task's sleep (default 0.1)")
    p.add_argument("--util-workers", type=int, default=4, help="utilisation: single-slot workers (default 4)")
    p.add_argument("--tree", help="tree sum: lo,hi,leaf (default 0,512,8; quick: 0,128,8)")
    p.add_argument("--quick", action="store_true", help="small sizes: a check that everything runs")
    p.add_argument("--rounds", type=int, default=1, help="runs of each workload per system, back to back and "
                   "in alternating order; the table shows medians (default: %(default)s)")
    p.add_argument("--run-timeout", type=float, default=3600.0,
                   help="seconds one system may take for one workload (default: %(default)s)")
    p.add_argument("--output", type=Path, help="JSON report (default: benchmarks/results/side-by-side-<time>.json)")
    p.add_argument("--peer-python", default=getattr(sys, "_base_executable", None) or sys.executable,
                   help="Python that builds the peers' venvs (default: this one's base interpreter)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    systems = [s.strip() for s in opts.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            raise SystemExit(f"--systems: unknown system {s!r}; choose among {', '.join(SYSTEMS)}")
    workloads = plan(opts)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = opts.output or REPO / "benchmarks" / "results" / f"side-by-side-{stamp}.json"
    out_dir = output.with_suffix("")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The emulator (started by Skyloom's launcher) and the Skyloom driver import this tree's skyloom.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "sdk"), str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    sys.path[:0] = [str(REPO / "sdk"), str(REPO)]

    def interrupted_by(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM stop the run and everything it started (SIGINT too when this process was
    # started with it ignored, as a background job of a script is).
    signal.signal(signal.SIGTERM, interrupted_by)
    signal.signal(signal.SIGINT, interrupted_by)
    run = Run(opts, uuid.uuid4().hex, out_dir)
    os.environ[MARKER_ENV] = run.token  # the emulator inherits it
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name if sys.argv else "side_by_side.py", *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "versions": _versions(systems),
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}, "systems": systems},
        "timing": "client side: first submit -> every value received, after all workers are up and one "
                  "warm-up task; each workload on a fresh instance of each system",
        "workloads": {w.key: w.label for w in workloads},
        "runs": {},
    }
    started = time.monotonic()
    interrupted = False
    try:
        if "celery" in systems:
            run.redis = redis_server()
        for name in ("celery", "dask"):
            if name in systems:
                run.pythons[name] = peer_python(name, opts.peer_python)
        for workload in workloads:
            for n in range(opts.rounds):
                for system in (systems if n % 2 == 0 else systems[::-1]):
                    result = run.one(system, workload, n)
                    if n == 0:
                        report["runs"].setdefault(workload.key, {})[system] = result
                    if opts.rounds > 1:
                        rounds = report.setdefault("rounds", [])
                        if len(rounds) <= n:
                            rounds.append({})
                        rounds[n].setdefault(workload.key, {})[system] = result
                    _write(output, report, started)
    except KeyboardInterrupt:
        interrupted = True
        print("[side-by-side] interrupted; stopping what was started", flush=True)
    finally:
        sweep(run.token)
        report["interrupted"] = interrupted
        _write(output, report, started)
    print()
    print(table(report))
    print(f"\nReport: {output} (logs in {out_dir}); {report['total_seconds']:.0f} s in all.")
    return 130 if interrupted else 0


def _versions(systems: Sequence[str]) -> dict[str, str]:
    out = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        out["skyloom_commit"] = commit
    except (OSError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["moto"] = version("moto")
    if "celery" in systems:
        pins = pinned("celery")
        out.update({k: pins[k] for k in ("celery", "kombu", "boto3", "pycurl", "redis") if k in pins})
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out["redis-server"] = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"],
                                                 capture_output=True, text=True, timeout=10).stdout.split()[2]
    if "dask" in systems:
        pins = pinned("dask")
        out.update({k: pins[k] for k in ("dask", "distributed") if k in pins})
    return out


def _write(output: Path, report: dict[str, Any], started: float) -> None:
    report["total_seconds"] = round(time.monotonic() - started, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(output)


if __name__ == "__main__":
    sys.exit(main())
