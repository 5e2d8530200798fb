"""``skyloom results``: list a session's results, show one (with why it aborted), download a value."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from skyloom.cli.common import (
    AfterOption,
    AllOption,
    BeforeOption,
    DescOption,
    EndpointOption,
    JsonOption,
    LimitOption,
    NextOption,
    SessionOption,
    StatusOption,
    collect,
    connected,
    console,
    find_session,
    fmt_bytes,
    fmt_time,
    id_table,
    parse_when,
    print_json,
    sort_items,
    statuses,
    styled,
)
from skyloom.core.protocol import ResultInfo

app = typer.Typer(help="List, inspect and download results.", no_args_is_help=True)

ResultArg = Annotated[str, typer.Argument(help="A result id.")]


class ResultSort(StrEnum):
    created = "created"
    completed = "completed"
    status = "status"
    size = "size"
    name = "name"


_SORT_KEYS: dict[ResultSort, Callable[[ResultInfo], Any]] = {
    ResultSort.created: lambda r: r.created_at,
    ResultSort.completed: lambda r: r.completed_at,
    ResultSort.status: lambda r: r.status,
    ResultSort.size: lambda r: r.size,
    ResultSort.name: lambda r: r.name,
}


@app.command("list")
def list_(
    session_id: Annotated[str, typer.Argument(help="A session id.")],
    status: StatusOption = None,
    created_after: AfterOption = None,
    created_before: BeforeOption = None,
    limit: LimitOption = 100,
    next_token: NextOption = None,
    all_pages: AllOption = False,
    sort: Annotated[ResultSort, typer.Option("--sort", help="Sort key.")] = ResultSort.created,
    desc: DescOption = False,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """A session's results, filtered and sorted."""
    with connected(endpoint) as client:
        after, before = parse_when(created_after), parse_when(created_before)

        def page(token: str | None) -> tuple[list[ResultInfo], str | None]:
            p = client.list_results(session_id, status=statuses(status), created_after=after,
                                    created_before=before, limit=limit, next=token)
            return p.results, p.next

        items, token = collect(page, next_token=next_token, every=all_pages)
        items = sort_items(items, _SORT_KEYS[sort], desc)
        if as_json:
            print_json({"results": items, "next": token})
            return
        table = id_table("result", "name", "status", "size", "producer", "created", "completed")
        for r in items:
            table.add_row(r.result_id, r.name or "", styled(r.status), fmt_bytes(r.size),
                          r.owner_task_id or "client", fmt_time(r.created_at), fmt_time(r.completed_at))
        out = console()
        out.print(table)
        if token:
            out.print(f"more: --next {token}")


@app.command()
def show(
    result_id: ResultArg,
    session: SessionOption = None,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """One result: state, size, producer, and the root failure if it was aborted."""
    with connected(endpoint) as client:
        sid = find_session(client, "result", result_id, session)
        (r,) = client.get_results(sid, [result_id])
        if as_json:
            print_json(r)
            return
        out = console()
        out.print(f"[bold]result {r.result_id}[/bold] {r.name or ''}  {styled(r.status)}  session {r.session_id}")
        out.print(f"size {fmt_bytes(r.size)}  producer {r.owner_task_id or 'client'}  "
                  f"created {fmt_time(r.created_at)}  completed {fmt_time(r.completed_at)}")
        if r.error:
            e = r.error
            out.print(f"[red]aborted[/red]: task {e.task_id} ({e.handler or '?'}) ended {e.status} after "
                      f"{e.attempts} attempt(s): {e.type or 'error'}: {e.message}")
            if e.traceback:
                out.print(e.traceback.rstrip(), markup=False, highlight=False)


@app.command()
def download(
    result_id: ResultArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
    session: SessionOption = None,
    endpoint: EndpointOption = None,
) -> None:
    """Write a completed result's bytes to a file or stdout."""
    with connected(endpoint) as client:
        sid = find_session(client, "result", result_id, session)
        data = client.download(sid, result_id)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
        typer.echo(f"{len(data)} bytes -> {output}", err=True)
