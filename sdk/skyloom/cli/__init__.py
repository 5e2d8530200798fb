"""The ``skyloom`` command line: a small root that command groups attach to.

Each group lives in its own module with its own ``typer.Typer`` (``skyloom.cli.local`` for
``skyloom local ...``) and is registered below, so the root stays a list of groups.
"""

from __future__ import annotations

import typer

from skyloom.cli import bench, graph, local, metrics, results, sessions, stats, tasks, watch

app = typer.Typer(
    name="skyloom",
    help="Skyloom: dynamic task graphs on AWS serverless, or on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(local.app, name="local")
app.add_typer(bench.app, name="bench")
app.add_typer(sessions.app, name="sessions")
app.add_typer(tasks.app, name="tasks")
app.add_typer(results.app, name="results")
app.add_typer(metrics.app, name="metrics")
app.command("watch")(watch.command)
app.command("graph")(graph.command)
app.command("stats")(stats.command)


def main() -> None:
    """Entry point of the ``skyloom`` console script."""
    app()


__all__ = ["app", "main"]
