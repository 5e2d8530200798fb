"""``skyloom watch SESSION``: follow a session live until nothing is left to run.

Built on the events feed (``GET /sessions/{id}/events``): the first reads replay the session's
current state, later ones carry only what changed, so a poll costs the same however long the
session has been running on the client side. The view shows one bar per task state, the throughput
of finished tasks over the last half minute, and the ETA that throughput implies.

"Nothing left to run" means no task is Pending, Submitted or Processing, and no task is Creating
that changed recently: a task Creating for longer than ``--grace`` is a subtask staged by an
attempt that crashed before committing, which will never run.

Exit status: 0 when every task completed, 2 when some ended in Error, Timeout or Cancelled (so a
script can ``skyloom watch $S && next-step``), 1 on errors, 124 on ``--timeout``.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from skyloom.cli.common import STATE_COLOURS, EndpointOption, JsonOption, connected, console, fmt_seconds
from skyloom.core.protocol_queries import SETTLE_SECONDS, Event

TASK_STATES = ("Creating", "Pending", "Submitted", "Processing", "Completed", "Error", "Timeout", "Cancelled")
RUNNING = frozenset({"Pending", "Submitted", "Processing"})
FAILED = frozenset({"Error", "Timeout", "Cancelled"})
FINAL = FAILED | {"Completed"}
#: Throughput is measured over this many seconds of history.
WINDOW_SECONDS = 30.0


@dataclass
class WatchState:
    """What the watcher knows: each task's latest state, and when tasks finished (for throughput)."""

    tasks: dict[str, tuple[str, float]] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    finished: deque[tuple[float, int]] = field(default_factory=deque)

    def apply(self, events: Iterable[Event], now: float) -> int:
        """Fold events in; returns how many tasks became final."""
        newly = 0
        for e in events:
            if e.kind == "result":
                self.results[e.id] = e.status
                continue
            before = self.tasks.get(e.id, ("", 0.0))[0]
            self.tasks[e.id] = (e.status, e.at)
            if e.status in FINAL and before not in FINAL:
                newly += 1
        if newly:
            self.finished.append((now, newly))
        while self.finished and self.finished[0][0] < now - WINDOW_SECONDS:
            self.finished.popleft()
        return newly

    def counts(self) -> Counter[str]:
        return Counter(s for s, _ in self.tasks.values())

    def throughput(self, now: float, watched_for: float) -> float:
        """Tasks finished per second over the window (or since the watch began, if shorter)."""
        span = min(WINDOW_SECONDS, max(watched_for, 1e-6))
        return sum(n for t, n in self.finished if t >= now - WINDOW_SECONDS) / span

    def left(self, wall_now: float, grace: float) -> int:
        """Tasks still to run: live unfinished ones, and staged ones that may still become live."""
        return sum(
            1
            for s, at in self.tasks.values()
            if s in RUNNING or (s == "Creating" and at > wall_now - grace)
        )

    def summary(self) -> dict[str, Any]:
        counts = self.counts()
        return {"tasks": len(self.tasks), "states": dict(counts), "results": dict(Counter(self.results.values())),
                "failed": sum(counts[s] for s in FAILED)}


def view(session_id: str, state: WatchState, rate: float) -> RenderableType:
    counts = state.counts()
    total = max(1, len(state.tasks))
    unfinished = sum(counts[s] for s in TASK_STATES if s not in FINAL)
    done = len(state.tasks) - unfinished
    eta = fmt_seconds(unfinished / rate) if rate > 0 and unfinished else "-"
    head = Text.from_markup(
        f"[bold]{session_id}[/bold]  {len(state.tasks)} tasks, {done} finished ({100 * done / total:.0f}%)  "
        f"throughput {rate:.1f}/s  ETA {eta}"
    )
    table = Table.grid(padding=(0, 2))
    for s in TASK_STATES:
        colour = STATE_COLOURS.get(s, "white")
        table.add_row(Text(s, style=colour), ProgressBar(total=total, completed=counts[s], width=40,
                                                         complete_style=colour), str(counts[s]))
    return Group(head, table)


def command(
    session_id: Annotated[str, typer.Argument(help="A session id.")],
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 1.0,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0, help="Give up after this many s.")] = None,
    grace: Annotated[float, typer.Option("--grace", min=0, help="Ignore tasks Creating for longer (s).")] = 30.0,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a session live (one bar per state, throughput, ETA) until nothing is left to run.

    With --json, print every event as one JSON line, then a final {"summary": ...} line.
    """
    out = console()
    with connected(endpoint) as client:
        client.get_session(session_id)  # an unknown session fails now, in one line
        state = WatchState()
        started = time.monotonic()
        cursor: str | None = None
        live = Live(console=out, refresh_per_second=4, transient=False) if out.is_terminal and not as_json else None
        last_line = ""
        try:
            if live is not None:
                live.start()
            while True:
                page = client.events(session_id, after=cursor, limit=1000)
                cursor = page.cursor
                now = time.monotonic()
                state.apply(page.events, now)
                if as_json:
                    for e in page.events:
                        typer.echo(e.model_dump_json(exclude_none=True))
                if page.more:
                    continue
                rate = state.throughput(now, now - started)
                if live is not None:
                    live.update(view(session_id, state, rate))
                elif not as_json:
                    line = _line(state, rate)
                    if line != last_line:
                        typer.echo(line)
                        last_line = line
                # Events younger than the settle horizon are not visible yet: wait that long before
                # concluding that a session with nothing running is finished.
                if now - started > SETTLE_SECONDS + interval and state.left(time.time(), grace) == 0:
                    break
                if timeout is not None and now - started >= timeout:
                    _finish(state, as_json)
                    typer.echo(f"error: still running after {timeout:g} s", err=True)
                    raise typer.Exit(124)
                time.sleep(interval)
        finally:
            if live is not None:
                live.stop()
    _finish(state, as_json)
    if state.summary()["failed"]:
        raise typer.Exit(2)


def _line(state: WatchState, rate: float) -> str:
    counts = state.counts()
    parts = " ".join(f"{s}={counts[s]}" for s in TASK_STATES if counts[s])
    return f"{len(state.tasks)} tasks: {parts or 'none'}  ({rate:.1f}/s)"


def _finish(state: WatchState, as_json: bool) -> None:
    summary = state.summary()
    if as_json:
        typer.echo(json.dumps({"summary": summary}))
    else:
        typer.echo(f"done: {_line(state, 0.0).split('  (')[0]}")
