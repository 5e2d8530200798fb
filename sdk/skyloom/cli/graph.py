"""``skyloom graph SESSION``: the bipartite graph of a session as Graphviz DOT, SVG or PNG.

Tasks are boxes, results ellipses, both filled by state; an edge goes from a task to each result it
produces and from a result to each task that reads it (dotted, and saying which, for an optional or
lazy input). A delegated output is drawn from the task that finally produced it, with a dashed edge
from the task that handed it down. Past ``--max-nodes`` the picture would be unreadable anyway, so
the graph is summarized by handler (a `@skyloom.task` function counts as its own, by
`module.qualname`, not as `skyloom.call`): one node per handler with its counts per state, one edge
per handler pair with the number of results between.

DOT is produced here; SVG, PNG and PDF need Graphviz's ``dot`` binary, which is looked up on
``PATH``. Without ``--format``, the format is the output file's extension (``-o graph.svg`` draws an
SVG), and DOT on stdout: a file named ``.svg`` must never hold DOT text.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from skyloom.cli.common import CliError, EndpointOption, connected, fail, task_name, write_output
from skyloom.core.protocol import ResultInfo, TaskInfo

#: Fill colours (X11 names Graphviz knows) by state.
FILL: dict[str, str] = {
    "Creating": "white",
    "Pending": "khaki",
    "Submitted": "lightcyan",
    "Processing": "lightskyblue",
    "Completed": "palegreen",
    "Error": "salmon",
    "Timeout": "plum",
    "Cancelled": "lightgrey",
    "Created": "khaki",
    "Aborted": "salmon",
    "Deleted": "lightgrey",
}
#: Which state colours a summarized handler: the most alarming one present.
_SEVERITY = ["Error", "Timeout", "Cancelled", "Processing", "Submitted", "Pending", "Creating", "Completed"]
DEFAULT_MAX_NODES = 300
NO_DOT = ("rendering {fmt} needs Graphviz's `dot` on PATH: install Graphviz (apt-get install graphviz, "
          "brew install graphviz) or use --format dot")


class Format(StrEnum):
    dot = "dot"
    svg = "svg"
    png = "png"
    pdf = "pdf"


#: Output file extensions and the format each means.
_BY_SUFFIX: dict[str, Format] = {".dot": Format.dot, ".gv": Format.dot, ".svg": Format.svg, ".png": Format.png,
                                 ".pdf": Format.pdf}


def output_format(fmt: Format | None, output: Path | None) -> Format:
    """The format asked for, else the one ``output``'s extension names, else DOT (stdout, no extension).

    Raises:
        CliError: naming ``--output``, when its extension names no format we draw.
    """
    if fmt is not None:
        return fmt
    if output is None or not output.suffix:
        return Format.dot
    found = _BY_SUFFIX.get(output.suffix.lower())
    if found is None:
        known = ", ".join(sorted(_BY_SUFFIX))
        raise CliError(f"--output {output}: cannot tell the format from {output.suffix!r} (known: {known}); "
                       "pass --format")
    return found


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(*lines: str) -> str:
    """A quoted DOT label of several lines (DOT's own ``\\n`` line breaks)."""
    return '"' + "\\n".join(x.replace("\\", "\\\\").replace('"', '\\"') for x in lines) + '"'


def _short(object_id: str) -> str:
    return object_id[:8]


def to_dot(tasks: Sequence[TaskInfo], results: Sequence[ResultInfo], *, max_nodes: int = DEFAULT_MAX_NODES,
           title: str = "skyloom") -> str:
    """The DOT text of a session's graph, in full or summarized by handler past ``max_nodes``."""
    if len(tasks) + len(results) > max_nodes:
        return summary_dot(tasks, results, title=title)
    lines = [f"digraph {_q(title)} {{", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for t in tasks:
        label = _label(task_name(t), _short(t.task_id), t.status)
        lines.append(f'  "t_{t.task_id}" [shape=box, style="filled,rounded", fillcolor={FILL.get(t.status, "white")},'
                     f" label={label}];")
    for r in results:
        label = _label(r.name or _short(r.result_id), r.status)
        lines.append(f'  "r_{r.result_id}" [shape=ellipse, style=filled, fillcolor={FILL.get(r.status, "white")},'
                     f" label={label}];")
    known_results = {r.result_id for r in results}
    known_tasks = {t.task_id for t in tasks}
    for r in results:
        if r.owner_task_id and r.owner_task_id in known_tasks:
            lines.append(f'  "t_{r.owner_task_id}" -> "r_{r.result_id}";')
    owner = {r.result_id: r.owner_task_id for r in results}
    for t in tasks:
        for rid in t.expected_outputs:  # handed down to a subtask: the final producer draws the solid edge
            if rid in known_results and owner[rid] != t.task_id:
                lines.append(f'  "t_{t.task_id}" -> "r_{rid}" [style=dashed, label="delegated"];')
        for rid in t.data_dependencies:
            if rid in known_results:
                lines.append(f'  "r_{rid}" -> "t_{t.task_id}"{_edge_style(t, rid)};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge_style(t: TaskInfo, rid: str) -> str:
    """A dependency edge of a kind other than mandatory is dotted and labelled (optional, lazy)."""
    kinds = [k for k, ids in (("optional", t.optional_dependencies), ("lazy", t.lazy_dependencies)) if rid in ids]
    return f' [style=dotted, label="{" ".join(kinds)}"]' if kinds else ""


def summary_dot(tasks: Sequence[TaskInfo], results: Sequence[ResultInfo], *, title: str = "skyloom") -> str:
    """One node per handler (counts by state), one edge per producer -> consumer handler pair."""
    by_handler: dict[str, Counter[str]] = defaultdict(Counter)
    handler_of = {t.task_id: task_name(t) for t in tasks}
    for t in tasks:
        by_handler[task_name(t)][t.status] += 1
    producer = {r.result_id: handler_of.get(r.owner_task_id or "", "client") for r in results}
    edges: Counter[tuple[str, str]] = Counter()
    for t in tasks:
        for rid in t.data_dependencies:
            edges[(producer.get(rid, "client"), task_name(t))] += 1
    lines = [f"digraph {_q(title)} {{", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10, shape=box];',
             f"  label={_q(f'{len(tasks)} tasks, {len(results)} results (summarized by handler)')};"]
    if any(src == "client" for src, _ in edges):
        lines.append('  "h_client" [shape=ellipse, label="client uploads"];')
    for handler, counts in sorted(by_handler.items()):
        worst = next((s for s in _SEVERITY if counts.get(s)), "Completed")
        label = _label(handler, f"{sum(counts.values())} tasks", *(f"{s} {n}" for s, n in sorted(counts.items())))
        lines.append(f'  {_q("h_" + handler)} [style="filled,rounded", fillcolor={FILL[worst]}, label={label}];')
    for (src, dst), n in sorted(edges.items()):
        lines.append(f'  {_q("h_" + src)} -> {_q("h_" + dst)} [label="{n}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: Format) -> bytes:
    """``dot_text`` as DOT (as is), SVG or PNG (through Graphviz's ``dot``)."""
    if fmt is Format.dot:
        return dot_text.encode()
    exe = shutil.which("dot")
    if exe is None:
        raise CliError(NO_DOT.format(fmt=fmt.value.upper()))
    done = subprocess.run([exe, f"-T{fmt.value}"], input=dot_text.encode(), capture_output=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise CliError(f"dot failed: {done.stderr.decode(errors='replace').strip()[:300]}")
    return done.stdout


def command(
    session_id: Annotated[str, typer.Argument(help="A session id.")],
    fmt: Annotated[
        Format | None,
        typer.Option("--format", "-f", help="dot, svg, png or pdf (default: -o's extension, else dot)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
    max_nodes: Annotated[int, typer.Option("--max-nodes", min=1, help="Summarize by handler past this.")] = (
        DEFAULT_MAX_NODES
    ),
    endpoint: EndpointOption = None,
) -> None:
    """Draw a session's graph of tasks and results, coloured by state."""
    try:
        chosen = output_format(fmt, output)
        if chosen is not Format.dot and shutil.which("dot") is None:
            raise CliError(NO_DOT.format(fmt=chosen.value.upper()))  # before any request: say it at once
    except CliError as exc:
        fail(str(exc), code=2)
    with connected(endpoint) as client:
        tasks = list(client.iter_tasks(session_id, limit=1000))
        results = list(client.iter_results(session_id, limit=1000))
    try:
        data = render(to_dot(tasks, results, max_nodes=max_nodes, title=session_id), chosen)
    except CliError as exc:
        fail(str(exc))
    write_output(data, output, f"{chosen.value} graph of {len(tasks)} tasks and {len(results)} results")
