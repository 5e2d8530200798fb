"""Tasks that submit themselves: the "Solve" pattern, on the local stack with real workers.

A recursive task's function holds its own TaskFunction among its globals; the workers rebuild it
by value from a pickle with that cycle in it. Covered here for functions of this module (by value:
it is not installed), of ``__main__``, of a module the workers cannot import, and of a notebook-style
``exec``; self-recursion, mutual recursion, and recursion six levels deep with delegation.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import skyloom

pytestmark = pytest.mark.slow

TIMEOUT = 240.0

TREE_SUM = textwrap.dedent(
    """
    import skyloom

    @skyloom.task
    def add(a, b):
        return a + b

    @skyloom.task
    def tree_sum(lo, hi):
        if hi - lo <= 8:
            return sum(range(lo, hi))
        mid = (lo + hi) // 2
        return add.submit(tree_sum.submit(lo, mid), tree_sum.submit(mid, hi))
    """
)


@skyloom.task
def add(a: int, b: int) -> int:
    return a + b


@skyloom.task
def tree_sum(lo: int, hi: int) -> Any:
    if hi - lo <= 8:
        return sum(range(lo, hi))
    mid = (lo + hi) // 2
    return add.submit(tree_sum.submit(lo, mid), tree_sum.submit(mid, hi))


@skyloom.task
def countdown_even(n: int, path: tuple[str, ...]) -> Any:
    return (*path, "even") if n == 0 else countdown_odd.submit(n - 1, (*path, "even"))


@skyloom.task
def countdown_odd(n: int, path: tuple[str, ...]) -> Any:
    return (*path, "odd") if n == 0 else countdown_even.submit(n - 1, (*path, "odd"))


@skyloom.task
def inc(x: int) -> int:
    return x + 1


@skyloom.task
def nest(level: int) -> Any:
    # Each level delegates its output to a subtask that depends on the next level down.
    if level == 0:
        return 0
    return inc.submit(nest.submit(level - 1))


def test_a_task_that_submits_itself(client: skyloom.Client) -> None:
    with client.session(name="tree-sum"):
        assert tree_sum.submit(0, 64).result(timeout=TIMEOUT) == sum(range(64))


def test_mutual_recursion(client: skyloom.Client) -> None:
    with client.session(name="mutual"):
        path = countdown_even.submit(4, ()).result(timeout=TIMEOUT)
    assert path == ("even", "odd", "even", "odd", "even")


def test_recursion_six_levels_deep_with_delegation(client: skyloom.Client) -> None:
    with client.session(name="nested") as s:
        top = nest.submit(6)
    assert top.result(timeout=TIMEOUT) == 6
    # The top-level output was delegated down: its producer is not the task first submitted for it.
    (info,) = s.get_results([top.id])
    (producer,) = s.get_tasks([info.owner_task_id or ""])
    assert producer.label is not None and producer.label.endswith("inc")


def test_recursion_from_a_module_the_workers_cannot_import(client: skyloom.Client, tmp_path: Path) -> None:
    (tmp_path / "desk_pricing.py").write_text(TREE_SUM)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("desk_pricing")
        with client.session(name="absent-module"):
            assert module.tree_sum.submit(0, 40).result(timeout=TIMEOUT) == sum(range(40))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("desk_pricing", None)


def test_recursion_from_a_notebook_style_exec(client: skyloom.Client) -> None:
    cell: dict[str, Any] = {}
    exec(compile(TREE_SUM, "<cell 3>", "exec"), cell)
    with client.session(name="notebook"):
        assert cell["tree_sum"].submit(0, 40).result(timeout=TIMEOUT) == sum(range(40))


def test_recursion_from_main(local_stack: Any, tmp_path: Path) -> None:
    script = tmp_path / "solve.py"
    script.write_text(
        TREE_SUM
        + textwrap.dedent(
            """
            if __name__ == "__main__":
                with skyloom.connect() as client, client.session(name="main"):
                    print(tree_sum.submit(0, 40).result(timeout=240))
            """
        )
    )
    env = {**os.environ, "SKYLOOM_ENDPOINT": local_stack.endpoint}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == str(sum(range(40)))
