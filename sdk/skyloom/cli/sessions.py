"""``skyloom sessions``: list the caller's sessions, show one, and move it through its lifecycle."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import StrEnum
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
    StatusOption,
    collect,
    connected,
    console,
    fmt_time,
    id_table,
    parse_when,
    print_json,
    sort_items,
    statuses,
    styled,
)
from skyloom.client.lowlevel import Client
from skyloom.core.protocol import SessionInfo

app = typer.Typer(help="List, inspect and control sessions.", no_args_is_help=True)

SessionArg = Annotated[str, typer.Argument(help="A session id.")]


class SessionSort(StrEnum):
    created = "created"
    updated = "updated"
    status = "status"
    name = "name"


_SORT_KEYS: dict[SessionSort, Callable[[SessionInfo], Any]] = {
    SessionSort.created: lambda s: s.created_at,
    SessionSort.updated: lambda s: s.updated_at,
    SessionSort.status: lambda s: s.status,
    SessionSort.name: lambda s: s.name,
}


@app.command("list")
def list_(
    status: StatusOption = None,
    created_after: AfterOption = None,
    created_before: BeforeOption = None,
    limit: LimitOption = 50,
    next_token: NextOption = None,
    all_pages: AllOption = False,
    sort: Annotated[SessionSort, typer.Option("--sort", help="Sort key.")] = SessionSort.created,
    desc: DescOption = True,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your sessions, newest first."""
    with connected(endpoint) as client:
        after, before = parse_when(created_after), parse_when(created_before)

        def page(token: str | None) -> tuple[list[SessionInfo], str | None]:
            p = client.list_sessions(status=statuses(status), created_after=after, created_before=before,
                                     limit=limit, next=token)
            return p.sessions, p.next

        items, token = collect(page, next_token=next_token, every=all_pages)
        items = sort_items(items, _SORT_KEYS[sort], desc)
        if as_json:
            print_json({"sessions": items, "next": token})
            return
        table = id_table("session", "name", "status", "created", "updated", "partitions")
        for s in items:
            table.add_row(s.session_id, s.name or "", styled(s.status), fmt_time(s.created_at),
                          fmt_time(s.updated_at), ",".join(s.partitions))
        out = console()
        out.print(table)
        if token:
            out.print(f"more: --next {token}")


@app.command()
def show(session_id: SessionArg, endpoint: EndpointOption = None, as_json: JsonOption = False) -> None:
    """A session's settings, and how many of its tasks and results are in each state."""
    with connected(endpoint) as client:
        info = client.get_session(session_id)
        tasks = Counter(t.status for t in client.iter_tasks(session_id, limit=1000))
        results = Counter(r.status for r in client.iter_results(session_id, limit=1000))
        if as_json:
            print_json({"session": info, "tasks": dict(tasks), "results": dict(results)})
            return
        out = console()
        out.print(f"[bold]{info.session_id}[/bold] {info.name or ''}  {styled(info.status)}")
        out.print(f"created {fmt_time(info.created_at)}  updated {fmt_time(info.updated_at)}  "
                  f"owner {info.owner}")
        out.print(f"partitions: {', '.join(info.partitions)}")
        options = info.options.compact()
        if options:
            out.print(f"default options: {options}")
        out.print("tasks:   " + (_counts(tasks) or "none"))
        out.print("results: " + (_counts(results) or "none"))


def _counts(counter: Counter[str]) -> str:
    return "  ".join(f"{styled(k)} {v}" for k, v in sorted(counter.items()))


def _lifecycle(name: str, call: Callable[[Client, str], SessionInfo], doc: str) -> None:
    def command(session_id: SessionArg, endpoint: EndpointOption = None, as_json: JsonOption = False) -> None:
        with connected(endpoint) as client:
            info = call(client, session_id)
            if as_json:
                print_json(info)
            else:
                console().print(f"session {info.session_id}: {styled(info.status)}")

    command.__doc__ = doc
    app.command(name)(command)


_lifecycle("cancel", Client.cancel_session, "Cancel a session: unfinished tasks are cancelled.")
_lifecycle("pause", Client.pause_session, "Pause a session: nothing new starts until resume.")
_lifecycle("resume", Client.resume_session, "Resume a paused session.")
_lifecycle("close", Client.close_session, "Close a session to new submissions; what runs finishes.")
_lifecycle("purge", Client.purge_session, "Delete the data of a closed or cancelled session.")


@app.command()
def delete(
    session_id: SessionArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a closed or cancelled session with its data and metadata."""
    if not yes:
        typer.confirm(f"delete session {session_id} and everything in it?", abort=True)
    with connected(endpoint) as client:
        info = client.delete_session(session_id)
        if as_json:
            print_json(info)
        else:
            console().print(f"session {info.session_id}: {styled(info.status)}")
