"""Functions shipped by value rebuild in a process that cannot import where they were defined.

The worker's child is such a process: the user's ``__main__``, a notebook, or a module of a
checkout the worker image does not have. The pickled function is loaded here in a fresh
interpreter whose ``sys.path`` lacks the defining module, exactly as on a worker.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Recursive and mutually recursive tasks: each function's globals hold its own TaskFunction, so
# pickling it meets a reference cycle through TaskFunction.__reduce__.
MODULE = textwrap.dedent(
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

    @skyloom.task
    def is_even(n):
        return True if n == 0 else is_odd(n - 1)

    @skyloom.task
    def is_odd(n):
        return False if n == 0 else is_even(n - 1)
    """
)

DUMP = textwrap.dedent(
    """
    from skyloom.client.functions import shipped_function
    with open(OUT, "wb") as f:
        for fn in (tree_sum, is_even):
            data = shipped_function(fn)
            f.write(len(data).to_bytes(8, "big") + data)
    """
)

# Loads each function and calls it locally (recursion within the process: the rebuilt
# TaskFunction must be complete, its globals pointing at rebuilt TaskFunctions too).
LOAD = textwrap.dedent(
    """
    import sys, cloudpickle
    raw = open(sys.argv[1], "rb").read()
    fns = []
    while raw:
        n = int.from_bytes(raw[:8], "big")
        fns.append(cloudpickle.loads(raw[8 : 8 + n]))
        raw = raw[8 + n :]
    tree_sum, is_even = fns
    assert tree_sum(0, 6) == 15, tree_sum(0, 6)
    assert is_even(10) is True and is_even(7) is False
    assert tree_sum.definition.fn.__globals__["tree_sum"] is tree_sum
    print("ok", tree_sum.definition.name, is_even.definition.name)
    """
)


def _load_elsewhere(pickled: Path, cwd: Path) -> str:
    """Unpickle in a fresh interpreter started in ``cwd`` (which does not hold the module)."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(pickled)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _dump(script: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    other = tmp_path / "worker"
    other.mkdir()
    return other


def test_recursive_functions_of_a_module_the_worker_lacks(tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "quant_lib.py").write_text(MODULE)
    out = tmp_path / "fns.bin"
    _dump(f"OUT = {str(out)!r}\nfrom quant_lib import tree_sum, is_even\n" + DUMP, tmp_path)
    assert _load_elsewhere(out, elsewhere).split() == ["ok", "quant_lib.tree_sum", "quant_lib.is_even"]


def test_recursive_functions_defined_in_main(tmp_path: Path, elsewhere: Path) -> None:
    script = tmp_path / "script.py"
    out = tmp_path / "fns.bin"
    script.write_text(MODULE + f"\nOUT = {str(out)!r}\n" + DUMP)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _load_elsewhere(out, elsewhere).split() == ["ok", "__main__.tree_sum", "__main__.is_even"]


def test_recursive_functions_defined_by_exec_as_in_a_notebook(tmp_path: Path, elsewhere: Path) -> None:
    # A notebook cell runs in a namespace dict; an exec'd one may lack __name__ altogether.
    out = tmp_path / "fns.bin"
    cell = (
        f"ns = {{}}\nexec(compile({MODULE!r}, '<cell>', 'exec'), ns)\n"
        "tree_sum, is_even = ns['tree_sum'], ns['is_even']\n"
    )
    _dump(f"OUT = {str(out)!r}\n" + cell + DUMP, tmp_path)
    assert _load_elsewhere(out, elsewhere).split()[0] == "ok"
