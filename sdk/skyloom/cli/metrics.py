"""``skyloom metrics``: the measurements tasks recorded under business keys, and run-time history."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from skyloom.cli.common import EndpointOption, JsonOption, connected, console, fmt_seconds, fmt_time, print_json

app = typer.Typer(help="Read measurements that outlive sessions, and run-time history.", no_args_is_help=True)


@app.command()
def show(
    key: Annotated[str, typer.Argument(help="A business key (e.g. a trade id).")],
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every measurement recorded under KEY, with its last value and the task that recorded it."""
    with connected(endpoint) as client:
        info = client.metrics.show(key)
    if as_json:
        print_json(info)
        return
    table = Table("name", "last value", "recorded", "session", "task", title=f"key {key}")
    for v in info.latest:
        table.add_row(v.name, f"{v.value:g}", fmt_time(v.recorded_at), v.session_id or "-", v.task_id or "-")
    console().print(table)
    if not info.latest:
        console().print(f"nothing recorded under {key}")


@app.command()
def history(
    key: Annotated[str, typer.Argument(help="A business key.")],
    name: Annotated[str, typer.Argument(help="A measurement name.")],
    limit: Annotated[int, typer.Option("--limit", help="Values to show, newest first.")] = 20,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """The values of NAME under KEY, newest first."""
    with connected(endpoint) as client:
        values = client.metrics.history(key, name, limit=limit)
    if as_json:
        print_json({"key": key, "name": name, "values": values})
        return
    table = Table("recorded", "value", "session", "task", title=f"{key} / {name}")
    for v in values:
        table.add_row(fmt_time(v.recorded_at), f"{v.value:g}", v.session_id or "-", v.task_id or "-")
    console().print(table)


@app.command()
def durations(
    label: Annotated[str, typer.Argument(help="A handler, or a @skyloom.task function's module.qualname.")],
    days: Annotated[float, typer.Option("--days", help="How far back to look.")] = 7.0,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run times of LABEL across sessions: count, mean, moving average, percentiles."""
    with connected(endpoint) as client:
        stats = client.metrics.durations(label, since=time.time() - days * 86400)
    if as_json:
        print_json(stats)
        return
    console().print(
        f"{label}: {stats.count} run(s); mean {fmt_seconds(stats.mean)}, moving average "
        f"{fmt_seconds(stats.moving_average)} (last {stats.moving_windows} minute(s) with runs); "
        f"p50 {fmt_seconds(stats.p50)}, p90 {fmt_seconds(stats.p90)}, p99 {fmt_seconds(stats.p99)}, "
        f"max {fmt_seconds(stats.max)}"
    )
