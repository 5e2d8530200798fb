"""EMULATORS.md names a test for each patch to moto: each named test exists, and each patch is listed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "EMULATORS.md"


def _named_tests() -> list[tuple[str, str]]:
    """(file, test) for every ``tests/...py::test_x`` in the page; ``::test_y`` reuses the last file."""
    found: list[tuple[str, str]] = []
    last = ""
    for path, name in re.findall(r"`(tests/[\w/]+\.py)?::(test_\w+)`", DOC.read_text(encoding="utf-8")):
        last = path or last
        found.append((last, name))
    return found


def test_every_test_the_page_names_exists() -> None:
    named = _named_tests()
    assert len(named) >= 7
    for path, name in named:
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert name in defined, f"EMULATORS.md names {path}::{name}, which does not exist"


def test_every_patch_of_moto_app_is_on_the_page() -> None:
    # moto_app's patches are its module-level assignments to moto's classes and functions.
    tree = ast.parse((REPO / "sdk/skyloom/local/moto_app.py").read_text(encoding="utf-8"))
    patched = {ast.unparse(t) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
               if isinstance(t, ast.Attribute)}
    assert patched == {"DynamoDBStreamsBackend.get_records", "DynamoDBBackend.transact_write_items"}, (
        "a new patch: list it in EMULATORS.md, then here")
    text = DOC.read_text(encoding="utf-8")
    for name in ("_transact_write_items", "_without_counts", "_visible_now", "_serialize_dynamodb",
                 "_stop_tracking", "MAX_SHARD_ITERATORS", "moto_indexes.py", "moto_queues.py", "moto_conditions.py",
                 "moto_items.py", "moto_requests.py", "_collector_round", "SKYLOOM_LOCAL_PARENT_PID"):
        assert name in text
