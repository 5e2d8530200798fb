"""The README runs as written: its commands and Python snippets, against a local stack.

The fenced blocks are read from README.md itself, so an edit that breaks one fails here. As a user
would: ``skyloom local up`` in one "terminal" (found by discovery: no ``SKYLOOM_ENDPOINT``), the
Python snippets run as notebook cells in one process, then the CLI commands of "Seeing what runs"
with SESSION, S and TASK replaced by real ids. ``make demo`` runs as the Makefile writes it, with its
console checked for library warnings and metric JSON. The low-level snippet's handler is installed
on the workers as the README says (``SKYLOOM_HANDLER_MODULES``): its definition, cut before the
``with`` that uses it, is the module the workers import.

Blocks of sections that need AWS, Docker or the whole suite are listed in ``NOT_RUN`` with why; a
block in a section this test does not know fails it, so that a new block is run or said not to be.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BIN = Path(sys.executable).parent
TIMEOUT = 300.0
#: The module the workers import for the low-level snippet's handler.
HANDLER_MODULE = "readme_handlers"

#: Sections whose blocks run here.
RUN = {"Quick start", "The Python API by example", "Seeing what runs"}
#: Sections whose blocks do not run here, and why.
NOT_RUN = {
    "Architecture": "a diagram",
    "Deploy to AWS": "needs an AWS account (tests/infra deploys the stack into moto instead)",
}
#: Commands of run sections that do not run here, and why.
SKIPPED_COMMANDS = {"make test": "the whole suite, of which this test is part"}
#: Commands run as written plus these flags, and why.
QUICKER = {"skyloom bench": ("--tasks 200 --latency-repeats 1 --forkjoin-tasks 0",
                             "its figures are not checked here (benchmarks/ has the standard runs); a minute saved")}


@dataclass(frozen=True)
class Block:
    section: str
    language: str
    text: str


def readme_blocks() -> list[Block]:
    """Every fenced block of the README with the ``##`` section it is in."""
    blocks: list[Block] = []
    section = ""
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(section, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n"))
            i = end
        i += 1
    return blocks


def commands(block: Block) -> list[str]:
    """The shell commands of a block, comments stripped."""
    found = []
    for line in block.text.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            found.append(command)
    return found


def test_every_block_is_run_or_said_not_to_be() -> None:
    blocks = readme_blocks()
    assert blocks, "no fenced blocks found in README.md"
    unknown = sorted({b.section for b in blocks} - RUN - set(NOT_RUN))
    assert not unknown, f"README sections with blocks this test neither runs nor skips: {unknown}"


# ----------------------------------------------------------------------------------- the stack
@dataclass(frozen=True)
class Terminal:
    """What a user's shells share: the environment (SKYLOOM_HOME, no endpoint) and a work dir."""

    env: dict[str, str]
    cwd: Path

    def run(self, command: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(command)
        if argv[0] in ("skyloom", "python"):
            argv[0] = str(BIN / argv[0])
        return subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    """``skyloom local up`` running, and the environment of a shell next to it."""
    work = tmp_path_factory.mktemp("readme")
    [low_level] = [b for b in readme_blocks() if b.language == "python" and "@skyloom.handler" in b.text]
    handlers = low_level.text.split("\nwith ", 1)[0]
    (work / f"{HANDLER_MODULE}.py").write_text(handlers)
    env = {k: v for k, v in os.environ.items() if k != "SKYLOOM_ENDPOINT"}
    env["SKYLOOM_HOME"] = str(work / "home")
    env["SKYLOOM_HANDLER_MODULES"] = HANDLER_MODULE
    env["PYTHONPATH"] = os.pathsep.join([str(work), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    up = subprocess.Popen([str(BIN / "skyloom"), "local", "up", "--workers", "2"], cwd=work, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = work / "home" / "local.json"
    try:
        deadline = time.monotonic() + TIMEOUT
        while not state.exists():
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, "skyloom local up did not come up"
            time.sleep(0.1)
        yield Terminal(env, work)
    finally:
        up.send_signal(signal.SIGTERM)
        out, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert_quiet_console(out, err)


def assert_quiet_console(out: str, err: str) -> None:
    """No metric JSON and no library warnings where a person reads."""
    lines = out.splitlines() + err.splitlines()
    assert not [x for x in lines if x.lstrip().startswith('{"')], "JSON on the console:\n" + out + err
    assert not [x for x in lines if "Warning" in x], "a warning on the console:\n" + out + err


# ------------------------------------------------------------------------------------ the blocks
def test_quick_start(terminal: Terminal) -> None:
    [block] = [b for b in readme_blocks() if b.section == "Quick start"]
    for command in commands(block):
        if command in SKIPPED_COMMANDS:
            continue
        assert command == "make demo", f"a new Quick start command to run here: {command}"
        # As written, with this interpreter's venv in place of .venv (`-o venv`: not rebuilt).
        done = subprocess.run(["make", "--no-print-directory", "-o", "venv", "demo", f"BIN={BIN}"], cwd=REPO,
                              env=terminal.env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "matches the sequential recomputation" in done.stdout
        assert_quiet_console(done.stdout.replace(f"{BIN}/skyloom local run", ""), done.stderr)


def test_python_snippets_run_as_notebook_cells(terminal: Terminal) -> None:
    cells = [b.text for b in readme_blocks() if b.section == "The Python API by example" and b.language == "python"]
    assert len(cells) >= 3
    runner = terminal.cwd / "notebook.py"
    runner.write_text(textwrap.dedent(
        """
        import json, sys
        cells = json.loads(sys.argv[1])
        namespace = {"__name__": "__main__"}
        for i, cell in enumerate(cells):
            print(f"--- cell {i}", flush=True)
            exec(compile(cell, f"<README cell {i}>", "exec"), namespace)
        """
    ))
    done = terminal.run(f"python {runner} {shlex.quote(json.dumps(cells))}")
    assert done.returncode == 0, done.stdout + done.stderr
    # It used the running stack (found, not started: nothing said about starting one).
    assert "started one at" not in done.stderr, done.stderr
    outputs = done.stdout.split("--- cell ")
    trades = [{"notional": 1_000_000.0 * (i + 1), "rate": 0.01 + i / 1000} for i in range(20)]
    expected = sum(t["notional"] * t["rate"] for t in trades)
    assert abs(float(outputs[1].splitlines()[-1]) - expected) < 1e-6 * expected, outputs[1]
    assert len([x for x in outputs[2].splitlines()[1:] if x.strip()]) == len(trades)  # as_completed prints
    assert outputs[3].splitlines()[-1] == repr(b"INPUT BYTES")


def test_seeing_what_runs(terminal: Terminal) -> None:
    # GIVEN the sessions of the snippets (the low-level one is the newest: one task, completed)
    listed = terminal.run("skyloom sessions list --json")
    assert listed.returncode == 0, listed.stderr
    sessions = sorted(json.loads(listed.stdout)["sessions"], key=lambda s: s["created_at"])
    assert sessions, "run the snippets first (test_python_snippets_run_as_notebook_cells)"
    session = sessions[-1]["session_id"]
    tasks = json.loads(terminal.run(f"skyloom tasks list {session} --json").stdout)["tasks"]
    ids = {"SESSION": session, "S": session, "TASK": tasks[0]["task_id"]}
    [block] = [b for b in readme_blocks() if b.section == "Seeing what runs"]
    for command in commands(block):
        command = " ".join(ids.get(word, word) for word in command.split())
        command += "".join(f" {flags}" for prefix, (flags, _) in QUICKER.items() if command.startswith(prefix))
        done = terminal.run(command)
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
        if " graph " in f" {command} ":
            svg = ET.parse(terminal.cwd / "graph.svg").getroot()
            assert svg.tag.endswith("svg"), "skyloom graph -o graph.svg must write SVG"
        if command.startswith("skyloom tasks show"):
            assert "demo.upper" in done.stdout
