"""A function shipped by value fails on a machine without its file: the traceback still shows its lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle

from skyloom.client import sources

USER_MODULE = textwrap.dedent(
    """
    import skyloom

    def check(x):
        if x > 1:
            raise ValueError(f"bad trade {x}")  # the line the traceback must show
        return x

    @skyloom.task
    def price(x):
        return check(x) + 1
    """
)

WORKER = textwrap.dedent(
    """
    import sys, traceback, cloudpickle
    fn = cloudpickle.loads(sys.stdin.buffer.read())
    try:
        fn(7)
    except ValueError:
        print(traceback.format_exc())
    """
)


def test_traceback_of_a_function_shipped_by_value_shows_its_source(tmp_path: Path) -> None:
    module_dir = tmp_path / "project"
    module_dir.mkdir()
    (module_dir / "pricing_lib.py").write_text(USER_MODULE)
    sys.path.insert(0, str(module_dir))
    try:
        import pricing_lib  # type: ignore[import-not-found]

        cloudpickle.register_pickle_by_value(pricing_lib)
        shipped = cloudpickle.dumps(pricing_lib.price)
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop("pricing_lib", None)
    (module_dir / "pricing_lib.py").unlink()  # the worker has no copy of the file

    out = subprocess.run([sys.executable, "-c", WORKER], input=shipped, capture_output=True, check=True, cwd=tmp_path)
    text = out.stdout.decode()
    assert 'raise ValueError(f"bad trade {x}")' in text  # in the helper, shipped along
    assert "return check(x) + 1" in text  # in the task function itself
    assert str(module_dir / "pricing_lib.py") in text


def test_nothing_is_shipped_for_code_without_a_file() -> None:
    namespace: dict[str, object] = {}
    exec("def f():\n    return 1\n", namespace)  # code with no source file
    assert sources.capture(namespace["f"]) is None
