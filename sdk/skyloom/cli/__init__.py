"""The ``skyloom`` command line: a small root that command groups attach to.

Each group lives in its own module with its own ``typer.Typer`` (``skyloom.cli.local`` for
``skyloom local ...``) and is registered below, so the root stays a list of groups. ``skyloom local``
and ``skyloom bench`` need the ``skyloom[local]`` extra; without it they say so, and the rest works.
"""

from __future__ import annotations

import typer

from skyloom.cli import bench, graph, metrics, results, sessions, stats, tasks, watch
from skyloom.cli.common import fail
from skyloom.extras import MissingExtra, missing

app = typer.Typer(
    name="skyloom",
    help="Skyloom: dynamic task graphs on AWS serverless, or on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
if not missing("local"):
    from skyloom.cli import local

    app.add_typer(local.app, name="local")
else:

    @app.command(
        "local",
        help="Run Skyloom locally (needs `pip install 'skyloom[local]'`, not installed here).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def local_unavailable() -> None:
        fail(str(MissingExtra("local", "`skyloom local`", missing("local"))))


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
    try:
        app()
    except MissingExtra as exc:  # e.g. `skyloom bench` without skyloom[local]: one line, no traceback
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


__all__ = ["app", "main"]
