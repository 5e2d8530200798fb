"""The ``skyloom`` command line: a small root that command groups attach to.

Each group lives in its own module with its own ``typer.Typer`` (``skyloom.cli.local`` for
``skyloom local ...``) and is registered below, so the root stays a list of groups.
"""

from __future__ import annotations

import typer

from skyloom.cli import local

app = typer.Typer(
    name="skyloom",
    help="Skyloom: dynamic task graphs on AWS serverless, or on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(local.app, name="local")


def main() -> None:
    """Entry point of the ``skyloom`` console script."""
    app()


__all__ = ["app", "main"]
