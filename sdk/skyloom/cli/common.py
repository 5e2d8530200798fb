"""What every inspection command shares: the endpoint, the client, one-line errors, output helpers.

The commands talk to the REST API through the SDK's low-level :class:`~skyloom.client.lowlevel.Client`
only, so they work the same against ``skyloom local up`` and a deployed stack. They never start an
embedded stack: a CLI that silently spins up an empty emulator would answer "no sessions" to
"where is my job?", which is worse than an error.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from skyloom.client.connection import ENV_ENDPOINT, _credentials, _is_loopback, _region
from skyloom.client.http import HttpTransport
from skyloom.client.lowlevel import Client
from skyloom.core.protocol import TaskInfo
from skyloom.errors import ConnectionFailed, NotFound, SkyloomError

NO_ENDPOINT = f"no Skyloom endpoint: run `skyloom local up` or set {ENV_ENDPOINT}"

EndpointOption = Annotated[
    str | None,
    typer.Option("--endpoint", "-e", envvar=ENV_ENDPOINT, show_envvar=True,
                 help="API base URL (default: a running `skyloom local up`)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
StatusOption = Annotated[
    list[str] | None, typer.Option("--status", "-s", help="Keep these states (repeat, or comma-separate).")
]
AfterOption = Annotated[
    str | None, typer.Option("--created-after", help="ISO time, epoch seconds, or an age like 10m, 2h, 1d.")
]
BeforeOption = Annotated[
    str | None, typer.Option("--created-before", help="ISO time, epoch seconds, or an age like 10m, 2h, 1d.")
]
LimitOption = Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Items per page.")]
NextOption = Annotated[str | None, typer.Option("--next", help="Continue from a previous page's token.")]
AllOption = Annotated[bool, typer.Option("--all", "-a", help="Fetch every page.")]
DescOption = Annotated[bool, typer.Option("--desc/--asc", help="Sort order.")]
SessionOption = Annotated[
    str | None, typer.Option("--session", help="The session holding the id (default: search your sessions).")
]

#: A listing's session, as an argument (``skyloom tasks list S``) or an option (``--session S``):
#: people type both, and the README wrote the option.
SessionArg = Annotated[str | None, typer.Argument(help="A session id (or --session).", show_default=False)]
ListSessionOption = Annotated[str | None, typer.Option("--session", help="A session id (or as argument).")]

T = TypeVar("T")


class Page(Protocol):
    """What every listing answer has: the token of the page after it."""

    next: str | None


P = TypeVar("P", bound=Page)

#: Colours of states, shared by tables, the watch view and the graph.
STATE_COLOURS: dict[str, str] = {
    "Creating": "grey50",
    "Pending": "yellow",
    "Submitted": "cyan",
    "Processing": "blue",
    "Completed": "green",
    "Error": "red",
    "Timeout": "magenta",
    "Cancelled": "grey62",
    "Created": "yellow",
    "Aborted": "red",
    "Deleted": "grey50",
    "Running": "blue",
    "Paused": "yellow",
    "Closed": "green",
    "Purged": "grey62",
}


class CliError(Exception):
    """A failure to report in one line, without a traceback."""


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# ----------------------------------------------------------------------------------- connecting
def resolve_endpoint(endpoint: str | None) -> str:
    """``--endpoint``/``SKYLOOM_ENDPOINT`` (typer reads both), else the running local stack (one
    ``skyloom local up`` runs, or a client process's embedded one)."""
    if endpoint:
        return endpoint.rstrip("/")
    env = os.environ.get(ENV_ENDPOINT)
    if env:
        return env.rstrip("/")
    try:
        from skyloom.local.discovery import START_WAIT_SECONDS, discover
    except ImportError:  # the [local] extra is not installed: nothing to discover
        raise CliError(NO_ENDPOINT) from None
    try:
        found = discover(wait=START_WAIT_SECONDS)  # a `skyloom local up` still starting is waited for
    except ConnectionFailed as exc:
        raise CliError(str(exc)) from None
    if not found:
        raise CliError(NO_ENDPOINT)
    return found


def make_client(endpoint: str) -> Client:
    """A client with the same credential and region rules as :func:`skyloom.connect`, but few
    retries: a person at a terminal wants "unreachable" in seconds, not after a minute of backoff."""
    creds = _credentials(None, _is_loopback(endpoint))
    transport = HttpTransport(endpoint, region=_region(endpoint), credentials=creds, max_attempts=2,
                              connect_timeout=3.0)
    return Client(transport)


@contextmanager
def connected(endpoint: str | None) -> Iterator[Client]:
    """A client for one command; any Skyloom error becomes ``error: ...`` and exit status 1."""
    try:
        client = make_client(resolve_endpoint(endpoint))
        try:
            yield client
        finally:
            client.close()
    except CliError as exc:
        fail(str(exc))
    except SkyloomError as exc:
        fail(exc.message.splitlines()[0] if exc.message else type(exc).__name__)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def listing_session(argument: str | None, option: str | None) -> str:
    """The session of a listing, given as SESSION or ``--session``; both must agree if both are given."""
    if argument and option and argument != option:
        fail(f"two sessions given: SESSION {argument} and --session {option}; give one", code=2)
    session = argument or option
    if not session:
        fail("which session? give SESSION or --session (skyloom sessions list shows yours)", code=2)
    return session


def find_session(client: Client, kind: str, object_id: str, session: str | None) -> str:
    """The session holding task/result ``object_id``: the one given, else the first of the
    caller's sessions (newest first) that knows it. Ids are globally unique, so one answers."""
    if session:
        return session
    getter: Callable[[str, Sequence[str]], Any] = client.get_tasks if kind == "task" else client.get_results
    for s in client.iter_sessions():
        try:
            getter(s.session_id, [object_id])
        except NotFound:
            continue
        return s.session_id
    raise CliError(f"no {kind} {object_id} in any of your sessions")


# --------------------------------------------------------------------------------------- output
def console() -> Console:
    """A console on the current stdout (tests swap it); wide when piped, so rows stay whole."""
    probe = Console(file=sys.stdout)
    return Console(file=sys.stdout, width=probe.width if probe.is_terminal else 200)


def id_table(first: str, *headers: str, title: str | None = None) -> Table:
    """A table whose first column holds ids: never truncated, since ids are what users copy."""
    table = Table(title=title)
    table.add_column(first, no_wrap=True, min_width=32)
    for h in headers:
        table.add_column(h)
    return table


def print_json(value: Any) -> None:
    """Pydantic models and lists of them as JSON, one document on stdout."""
    typer.echo(json.dumps(to_jsonable(value), indent=2, sort_keys=False))


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def task_name(t: TaskInfo) -> str:
    """What a task runs, as people know it: its label (a ``@skyloom.task`` function's
    ``module.qualname``) when it has one, else its handler (every such function shares
    ``skyloom.call``, which would lump them all together)."""
    return t.label or t.handler


def styled(status: str) -> str:
    colour = STATE_COLOURS.get(status)
    return f"[{colour}]{status}[/{colour}]" if colour else status


def fmt_time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def fmt_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def statuses(values: Sequence[str] | None) -> list[str] | None:
    """``--status Error --status Timeout`` and ``--status Error,Timeout`` alike."""
    if not values:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()] or None


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str | None, *, now: float | None = None) -> float | None:
    """An instant from ``2026-11-21T10:00``, ``1763719200`` or an age (``10m`` = ten minutes ago)."""
    if text is None:
        return None
    text = text.strip()
    m = _AGE.match(text)
    if m:
        current = now if now is not None else datetime.now(UTC).timestamp()
        return current - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"cannot read {text!r} as a time: use ISO, epoch seconds or an age (10m, 2h, 1d)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def collect(pages: Callable[[str | None], tuple[list[T], str | None]], *, next_token: str | None,
            every: bool) -> tuple[list[T], str | None]:
    """One page, or every page with ``--all``; returns the items and the token to continue."""
    items, token = pages(next_token)
    while every and token:
        more, token = pages(token)
        items += more
    return items, token


def sort_option(keys: Iterable[str]) -> Any:
    """``--sort`` limited to the names of a command's sort keys (for ``Annotated[str, ...]``)."""
    names = list(keys)

    def parse(value: str) -> str:
        if value not in names:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(names)}")
        return value

    return typer.Option("--sort", parser=parse, metavar="[" + "|".join(names) + "]", help="Sort key.")


def sort_items(items: Iterable[T], key: Callable[[T], Any], desc: bool) -> list[T]:
    """Sort with missing values last whatever the order (a task not started has no duration)."""
    listed = list(items)
    present = [i for i in listed if key(i) is not None]
    missing = [i for i in listed if key(i) is None]
    return sorted(present, key=key, reverse=desc) + missing


@dataclass(frozen=True)
class Listing:
    """The filter and paging options every ``list`` command takes, applied the same way by all.

    The command adds its own filters to the SDK call it passes to :meth:`fetch`; the created-time
    bounds are read here (inside :func:`connected`, so a bad time is a one-line error).
    """

    status: Sequence[str] | None
    created_after: str | None
    created_before: str | None
    limit: int
    next_token: str | None
    all_pages: bool

    def fetch(self, list_page: Callable[..., P], items: Callable[[P], list[T]]) -> tuple[list[T], str | None]:
        """One page (or all with ``--all``) of ``list_page(status=..., ..., next=token)``."""
        after, before = parse_when(self.created_after), parse_when(self.created_before)

        def page(token: str | None) -> tuple[list[T], str | None]:
            p = list_page(status=statuses(self.status), created_after=after, created_before=before,
                          limit=self.limit, next=token)
            return items(p), p.next

        return collect(page, next_token=self.next_token, every=self.all_pages)


def print_listing(key: str, items: Sequence[T], token: str | None, *, as_json: bool, columns: Sequence[str],
                  row: Callable[[T], Sequence[str]]) -> None:
    """A listing as ``{key: [...], "next": token}`` JSON, or as a table with how to continue."""
    if as_json:
        print_json({key: list(items), "next": token})
        return
    table = id_table(*columns)
    for item in items:
        table.add_row(*row(item))
    out = console()
    out.print(table)
    if token:
        out.print(f"more: --next {token}")


def write_output(data: bytes, output: Path | None, note: str) -> None:
    """Bytes to stdout, or to ``output`` with ``note`` (what was written) on stderr."""
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
        typer.echo(f"{note} -> {output}", err=True)


#: What :func:`quiet_local_functions` sets, unless the user chose otherwise.
QUIET_DEFAULTS = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}


def quiet_local_functions() -> None:
    """Keep a local stack's functions from burying a command's output: the resolve and dispatch
    functions run in the command's process and log JSON (logs, metrics) to its stdout."""
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
