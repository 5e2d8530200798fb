"""``skyloom results``: list a session's results, show one (with why it aborted), download a value."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
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
    Listing,
    ListSessionOption,
    NextOption,
    SessionArg,
    SessionOption,
    StatusOption,
    connected,
    console,
    find_session,
    fmt_bytes,
    fmt_time,
    listing_session,
    print_json,
    print_listing,
    sort_items,
    sort_option,
    styled,
    write_output,
)
from skyloom.core.protocol import ResultInfo

app = typer.Typer(help="List, inspect and download results.", no_args_is_help=True)

ResultArg = Annotated[str, typer.Argument(help="A result id.")]


_SORT_KEYS: dict[str, Callable[[ResultInfo], Any]] = {
    "created": lambda r: r.created_at,
    "completed": lambda r: r.completed_at,
    "status": lambda r: r.status,
    "size": lambda r: r.size,
    "name": lambda r: r.name,
}


@app.command("list")
def list_(
    session_arg: SessionArg = None,
    session_option: ListSessionOption = None,
    status: StatusOption = None,
    created_after: AfterOption = None,
    created_before: BeforeOption = None,
    limit: LimitOption = 100,
    next_token: NextOption = None,
    all_pages: AllOption = False,
    sort: Annotated[str, sort_option(_SORT_KEYS)] = "created",
    desc: DescOption = False,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """A session's results, filtered and sorted."""
    session_id = listing_session(session_arg, session_option)
    listing = Listing(status, created_after, created_before, limit, next_token, all_pages)
    with connected(endpoint) as client:
        items, token = listing.fetch(partial(client.list_results, session_id), lambda p: p.results)
    print_listing(
        "results", sort_items(items, _SORT_KEYS[sort], desc), token, as_json=as_json,
        columns=("result", "name", "status", "size", "producer", "created", "completed"),
        row=lambda r: (r.result_id, r.name or "", styled(r.status), fmt_bytes(r.size), r.owner_task_id or "client",
                       fmt_time(r.created_at), fmt_time(r.completed_at)),
    )


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
    write_output(data, output, f"{len(data)} bytes")
