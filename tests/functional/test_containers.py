"""Local mode's Lambda containers: a function's init phase runs before the container counts as up."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from skyloom.local.containers import ContainerPool
from skyloom.local.invoke import LambdaContext


def test_a_container_runs_the_functions_init_hook_before_it_serves(tmp_path: Path) -> None:
    # GIVEN a function module whose warm() (Lambda's init phase: clients, lookups) notes when it ran
    (tmp_path / "warmfn.py").write_text(textwrap.dedent("""
        import os, time
        def warm():
            with open(os.environ["MARKS"], "a") as f:
                f.write(f"warm {time.monotonic()}\\n")
        def handler(event, context):
            with open(os.environ["MARKS"], "a") as f:
                f.write("event\\n")
            return {"statusCode": 200}
    """))
    marks = tmp_path / "marks"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]), "MARKS": str(marks)}
    pool = ContainerPool("warmfn:handler", size=2, env=env)
    try:
        # WHEN the pool starts
        pool.start()
        # THEN each container has warmed up before any event reaches it
        assert [line.split()[0] for line in marks.read_text().splitlines()] == ["warm", "warm"]
        context = LambdaContext(function_name="f", region="us-east-1", timeout_seconds=3, aws_request_id="r")
        assert pool({}, context) == {"statusCode": 200}
        assert marks.read_text().splitlines()[-1] == "event"
    finally:
        pool.stop()
