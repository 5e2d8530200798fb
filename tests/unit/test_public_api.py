"""The public surface of ``skyloom`` is deliberate: this list changes only on purpose."""

from __future__ import annotations

import json
import subprocess
import sys

import skyloom

EXPECTED = {
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    # Kinds of data dependency (issue 16): the marker of an aborted optional input, a lazy input.
    "Aborted",
    "ClaimConflict",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DependencyAborted",
    # Raised before shipping functions to workers of another Python/cloudpickle (issue 18).
    "EnvironmentMismatch",
    "Future",
    "GraphCycle",
    "InvalidRequest",
    "LazyInput",
    "NotFound",
    "PayloadTooLarge",
    "ResultAlreadyWritten",
    "ResultNotFound",
    "Session",
    "SessionClosed",
    "SessionNotFound",
    "SkyloomError",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskFunction",
    "TaskNotFound",
    "TaskOptions",
    "TaskRequest",
    "TaskTimedOut",
    "Unauthorized",
    "WaitTimeout",
    "__version__",
    "as_completed",
    # Task checkpoints (issue 16): save, get back on a later attempt, last one on a reclaim.
    "checkpoint",
    "connect",
    "current_context",
    "gather",
    "handler",
    "metrics",
    "lazy",
    "on_preempt",
    "optional",
    "restore",
    "task",
    "wait",
}


def test_exports_are_pinned() -> None:
    assert set(skyloom.__all__) == EXPECTED
    # Kept sorted (constants first, as ruff's RUF022 orders it), so diffs stay readable.
    assert sorted(skyloom.__all__, key=lambda n: (not n.isupper(), n)) == skyloom.__all__
    for name in skyloom.__all__:
        assert getattr(skyloom, name) is not None


def test_public_names_are_documented_with_an_example() -> None:
    for name in ("task", "connect", "Client", "Session", "Future", "TaskContext", "TaskRequest", "handler",
                 "metrics", "wait", "as_completed", "gather"):
        doc = getattr(skyloom, name).__doc__ or ""
        assert "Example:" in doc, f"skyloom.{name} needs a docstring with an example"


def test_errors_share_one_root() -> None:
    errors = [getattr(skyloom, n) for n in skyloom.__all__ if n[0].isupper() and n.endswith(("Error", "Failed"))]
    assert errors and all(issubclass(e, skyloom.SkyloomError) for e in errors)
    assert issubclass(skyloom.DependencyAborted, skyloom.TaskFailed)


def test_importing_skyloom_stays_light() -> None:
    # Workers and Lambda functions import skyloom without the local extra; the child processes
    # that run user code never talk HTTP, so they must not pay for botocore either.
    code = "import json, sys, skyloom, skyloom.runtime.executor;print(json.dumps(sorted(m for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    heavy = ("moto", "gunicorn", "skyloom.local", "botocore", "boto3", "urllib3", "pynamodb")
    assert [m for m in loaded if m.split(".")[0] in heavy or m.startswith("skyloom.local")] == []
    # Nor the HTTP client: skyloom's client names load on first use (skyloom.client's __getattr__).
    http_client = ("connection", "lowlevel", "session", "http", "waiting", "gathering")
    assert [m for m in loaded if m.rpartition(".")[2] in http_client and m.startswith("skyloom.client.")] == []


def test_the_client_names_load_on_first_use_and_are_the_real_ones() -> None:
    code = ("import sys, skyloom, skyloom.client.connection as c, skyloom.client.gathering as g; "
            "from skyloom.client import connect; "
            "assert skyloom.connect is connect is c.connect and skyloom.gather is g.gather; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"
