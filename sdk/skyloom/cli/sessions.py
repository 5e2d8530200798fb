"""``skyloom sessions``: list the caller's sessions, show one, and move it through its lifecycle."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
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
    NextOption,
    StatusOption,
    connected,
    console,
    fmt_time,
    print_json,
    print_listing,
    sort_items,
    sort_option,
    styled,
)
from skyloom.client.lowlevel import Client
from skyloom.core.protocol import SessionInfo

app = typer.Typer(help="List, inspect and control sessions.", no_args_is_help=True)

SessionArg = Annotated[str, typer.Argument(help="A session id.")]


_SORT_KEYS: dict[str, Callable[[SessionInfo], Any]] = {
    "created": lambda s: s.created_at,
    "updated": lambda s: s.updated_at,
    "status": lambda s: s.status,
    "name": lambda s: s.name,
}


@app.command("list")
def list_(
    status: StatusOption = None,
    created_after: AfterOption = None,
    created_before: BeforeOption = None,
    limit: LimitOption = 50,
    next_token: NextOption = None,
    all_pages: AllOption = False,
    sort: Annotated[str, sort_option(_SORT_KEYS)] = "created",
    desc: DescOption = True,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your sessions, newest first."""
    listing = Listing(status, created_after, created_before, limit, next_token, all_pages)
    with connected(endpoint) as client:
        items, token = listing.fetch(client.list_sessions, lambda p: p.sessions)
    print_listing(
        "sessions", sort_items(items, _SORT_KEYS[sort], desc), token, as_json=as_json,
        columns=("session", "name", "status", "created", "updated", "partitions"),
        row=lambda s: (s.session_id, s.name or "", styled(s.status), fmt_time(s.created_at),
                       fmt_time(s.updated_at), ",".join(s.partitions)),
    )


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
