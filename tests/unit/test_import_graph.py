"""The module graph of skyloom and skyloom_server has no cycles, and its boundaries hold.

The graph is read from the sources with :mod:`ast` rather than with grimp or import-linter: those
find imports the same way, but the rules here are four short functions, and a function-level import
counts as an edge (it is the usual way to hide a cycle), which those tools would need configuring
for. Imports under ``if TYPE_CHECKING:`` are not edges (they never run), nor is the
``if __name__ == "__main__":`` block of a script (run so, the file is the module ``__main__``).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Import name -> folder, as installed (pyproject.toml's package-dir).
ROOTS = {
    "skyloom": REPO / "sdk" / "skyloom",
    "skyloom_server": REPO / "sdk" / "skyloom_server",
    "skyloom_server.functions": REPO / "functions",
    "skyloom_server.fargate_worker": REPO / "fargate_worker",
}
Edges = dict[str, dict[str, int]]


@cache
def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = [*name.split("."), *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _skipped(node: ast.If) -> bool:
    test = node.test
    if isinstance(test, ast.Name | ast.Attribute):
        return (test.id if isinstance(test, ast.Name) else test.attr) == "TYPE_CHECKING"
    return isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"


def _imported(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module name an import statement of ``module`` names, with its line."""
    out: list[tuple[str, int]] = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _skipped(child):
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]))
            elif isinstance(child, ast.Import):
                out.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = ".".join(package[: len(package) - child.level + 1]) if child.level else ""
                source = ".".join(p for p in (base, child.module or "") if p)
                for alias in child.names:
                    out.append((f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules() else source,
                                child.lineno))
            else:
                visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return out


@cache
def graph() -> Edges:
    """Module -> the project modules it imports (first line of each). Importing a submodule also runs
    its packages' ``__init__``; an edge to one's own ancestor package is that, not a dependency."""
    edges: Edges = {}
    for module, path in modules().items():
        targets: dict[str, int] = {}
        for name, line in _imported(module, path):
            while name and name not in modules():
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                targets.setdefault(name, line)
        edges[module] = targets
    return edges


def cycles(edges: Edges) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def _describe(component: list[str], edges: Edges) -> str:
    return "; ".join(f"{a}:{line} -> {b}" for a in component for b, line in edges[a].items() if b in component)


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "skyloom_server.functions.submit.routes" in edges
    assert "skyloom.core.protocol" in edges["skyloom_server.functions.submit.routes"]
    assert "skyloom.client.session" in edges["skyloom.client.lowlevel"]


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    edges = graph()
    found = cycles(edges)
    assert found == [], "import cycles: " + " | ".join(_describe(c, edges) for c in found)


def test_the_client_does_not_import_the_task_runtime() -> None:
    # A client process runs no task: the runtime finds its way to fn.submit() through
    # skyloom.client.backend.set_task_lookup instead.
    offending = [(m, t) for m, ts in graph().items() if m.startswith("skyloom.client") for t in ts
                 if t.startswith("skyloom.runtime")]
    assert offending == []


def test_nothing_imports_the_server_folders_by_their_generic_names() -> None:
    # In a checkout `functions` is importable too (the repository root is on the path for infra/
    # and tests/): importing it would load a second copy of every module beside skyloom_server's.
    offending = []
    for folder in (REPO / "sdk", REPO / "functions", REPO / "fargate_worker", REPO / "tests", REPO / "infra",
                   REPO / "benchmarks", REPO / "examples", REPO / "localstack"):
        for path in folder.rglob("*.py"):
            if any(part.startswith(".") for part in path.relative_to(REPO).parts):
                continue  # benchmarks/.peer-venv and the like: other projects' code
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offending += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] in ("functions", "fargate_worker")]
    assert offending == []
