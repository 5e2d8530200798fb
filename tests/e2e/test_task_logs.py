"""Task logs end to end, on the local stack: a task prints on stdout, on stderr and from a thread,
fails once then succeeds, and both attempts' logs are read back with ``future.logs()`` and with
``skyloom tasks logs`` / ``skyloom tasks show``. The second attempt prints more than the worker
keeps, so its log also takes the S3 path and says what was cut."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import skyloom
from skyloom.cli import app
from skyloom.core.limits import TASK_LOG_BYTES

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
#: Rows the second attempt prints: about 100 KB, more than the 64 KiB a worker keeps.
ROWS = 5000


@skyloom.task(max_retries=1)
def logs_flaky(x: int) -> int:
    attempt = skyloom.current_context().attempt
    print(f"attempt {attempt} pricing {x}")
    print(f"attempt {attempt} warning on stderr", file=sys.stderr)
    helper = threading.Thread(target=print, args=(f"attempt {attempt} from a thread",))
    helper.start()
    helper.join()
    if attempt == 1:
        raise ValueError("the first attempt fails")
    for i in range(ROWS):
        print(f"row {i:05d} " + "." * 10)
    print("done")
    return 2 * x


def cli(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(app, [*args], env={"SKYLOOM_ENDPOINT": endpoint}, catch_exceptions=False)


def stdout(r: Result) -> str:
    """The command's stdout without the lines the local stack's in-process functions print there."""
    return "".join(line for line in r.stdout.splitlines(keepends=True) if '"service":"skyloom-' not in line)


def test_both_attempts_logs_are_read_back(client: skyloom.Client, local_stack: Any) -> None:
    # GIVEN a task that printed on both attempts, failing the first
    with client.session(name="logs-e2e") as s:
        f = logs_flaky.submit(21)
    assert f.result(timeout=TIMEOUT) == 42
    assert f.task_id is not None
    first_lines = ["attempt 1 pricing 21", "attempt 1 warning on stderr", "attempt 1 from a thread"]

    # WHEN its logs are read with the SDK
    # THEN each attempt's log is there, in the order printed, the second one cut and ending whole
    first = f.logs(1)
    assert first.splitlines() == first_lines
    last = f.logs(-1)
    assert last == f.logs(2)
    assert last.startswith("... ") and " bytes cut ...\n" in last
    assert last.endswith(f"row {ROWS - 1:05d} ..........\ndone\n")
    assert len(last.encode()) <= TASK_LOG_BYTES.value + 100
    assert "attempt 2 pricing 21" not in last  # the beginning is what was cut
    every = f.logs()
    assert every.startswith(f"--- task {f.task_id} attempt 1 (error, worker ")
    assert f"--- task {f.task_id} attempt 2 (completed, worker " in every
    assert first in every and last in every

    # AND with the CLI: all of it, one attempt, JSON, and the tail in `tasks show`
    endpoint = local_stack.endpoint
    whole = cli(endpoint, "tasks", "logs", f.task_id)  # the session found by search
    assert whole.exit_code == 0, whole.output
    assert stdout(whole) == every
    one = cli(endpoint, "tasks", "logs", f.task_id, "--session", s.session_id, "--attempt", "1")
    assert one.exit_code == 0 and stdout(one) == first
    as_json = json.loads(stdout(cli(endpoint, "tasks", "logs", f.task_id, "--attempt", "-1", "--json")))
    (attempt,) = as_json["attempts"]
    assert attempt["number"] == 2 and attempt["outcome"] == "completed" and attempt["cut"] > 0
    assert attempt["bytes"] == attempt["cut"] + len(attempt["text"].split("\n", 1)[1].encode())
    shown = stdout(cli(endpoint, "tasks", "show", f.task_id, "--session", s.session_id))
    assert "  | attempt 1 from a thread" in shown and "  | done" in shown
    assert f"skyloom tasks logs {f.task_id} --attempt 2" in shown
    missing = cli(endpoint, "tasks", "logs", f.task_id, "--session", s.session_id, "--attempt", "3")
    assert missing.exit_code == 1 and "no ended attempt 3" in missing.output
