"""``skyloom tasks``: list a session's tasks, show one in full, read what it printed, cancel some.

``show`` answers "why is this task where it is": its options, every attempt with its error,
traceback and the last lines it printed, where the time went (waiting on data, in the queue,
fetching, computing, uploading), the inputs and outputs with their sizes, and its parent and
children. ``logs`` prints what the attempts printed, whole (as the worker kept it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import typer
from rich.table import Table

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
    fmt_seconds,
    fmt_time,
    listing_session,
    print_json,
    print_listing,
    sort_items,
    sort_option,
    styled,
    task_name,
)
from skyloom.core.protocol import AttemptLog, CheckpointInfo, ResultInfo, TaskInfo, TaskLogs

app = typer.Typer(help="List, inspect and cancel tasks, and read what they printed.", no_args_is_help=True)

#: Lines of each attempt's log that ``show`` prints (``logs`` prints them all).
SHOW_LOG_LINES = 10


def duration(t: TaskInfo) -> float | None:
    """Wall time of the last attempt (started to ended), if it ran to an end."""
    if t.started_at is None or t.ended_at is None:
        return None
    return max(0.0, t.ended_at - t.started_at)


_SORT_KEYS: dict[str, Callable[[TaskInfo], Any]] = {
    "created": lambda t: t.created_at,
    "status": lambda t: t.status,
    "handler": task_name,
    "duration": duration,
    "attempts": lambda t: t.attempt,
}


@app.command("list")
def list_(
    session_arg: SessionArg = None,
    session_option: ListSessionOption = None,
    status: StatusOption = None,
    handler: Annotated[
        str | None, typer.Option("--handler", help="Keep tasks of this handler or function (module.qualname).")
    ] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="Keep tasks of this partition.")] = None,
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
    """A session's tasks, filtered and sorted."""
    session_id = listing_session(session_arg, session_option)
    listing = Listing(status, created_after, created_before, limit, next_token, all_pages)
    with connected(endpoint) as client:
        fetch = partial(client.list_tasks, session_id, handler=handler, partition=partition)
        items, token = listing.fetch(fetch, lambda p: p.tasks)
    print_listing(
        "tasks", sort_items(items, _SORT_KEYS[sort], desc), token, as_json=as_json,
        columns=("task", "handler", "status", "attempt", "created", "duration"),
        row=lambda t: (t.task_id, task_name(t), styled(t.status), str(t.attempt), fmt_time(t.created_at),
                       fmt_seconds(duration(t))),
    )


def timings(t: TaskInfo) -> dict[str, float | None]:
    """Where the task's time went, in order; None where a phase has not happened."""
    m = t.metrics or {}

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, b - a)

    return {
        "waiting_on_data": span(t.created_at, t.submitted_at),
        "queue_wait": m.get("queue_wait", span(t.submitted_at, t.started_at)),
        "fetch": m.get("fetch"),
        "compute": m.get("compute"),
        "upload": m.get("upload"),
        "run_total": duration(t),
    }


@app.command()
def show(
    task_id: Annotated[str, typer.Argument(help="A task id.")],
    session: SessionOption = None,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Everything about one task: options, attempts, timings, inputs/outputs, parent, children."""
    with connected(endpoint) as client:
        sid = find_session(client, "task", task_id, session)
        (t,) = client.get_tasks(sid, [task_id])
        io_ids = list(dict.fromkeys([*t.data_dependencies, *t.expected_outputs]))
        io = {r.result_id: r for r in client.get_results(sid, io_ids)} if io_ids else {}
        children = list(client.iter_tasks(sid, parent=task_id, limit=1000))
        # One more request only when some attempt printed something.
        logs = client.task_logs(sid, task_id) if any(a.log_bytes for a in t.attempts) else None
        saved = client.task_checkpoints(sid, task_id)
        if as_json:
            print_json({
                "task": t,
                "timings": timings(t),
                "inputs": [io[i] for i in t.data_dependencies if i in io],
                "outputs": [io[i] for i in t.expected_outputs if i in io],
                "children": [c.task_id for c in children],
                "logs": logs.attempts if logs is not None else [],
                "checkpoints": saved,
            })
            return
        _render(t, io, children, {a.number: a for a in logs.attempts} if logs is not None else {})
        _render_checkpoints(saved)


@app.command()
def logs(
    task_id: Annotated[str, typer.Argument(help="A task id.")],
    attempt: Annotated[
        int | None, typer.Option("--attempt", help="Only this attempt (1 is the first, -1 the last).")
    ] = None,
    session: SessionOption = None,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """What a task's attempts printed on stdout and stderr (the last 64 KiB of each, the cut said)."""
    with connected(endpoint) as client:
        sid = find_session(client, "task", task_id, session)
        found = client.task_logs(sid, task_id, attempt=attempt if attempt is None or attempt > 0 else None)
    if attempt is not None and attempt < 0:  # counted from the end, which only the whole list knows
        found = found.model_copy(update={"attempts": found.attempts[attempt:][:1], "earlier": 0})
    if as_json:
        print_json(found)
        return
    if found.earlier:
        typer.echo(f"({found.earlier} earlier attempts not shown: ask with --attempt N)", err=True)
    typer.echo(_log_text(found, whole=attempt is None), nl=False)


def _log_text(found: TaskLogs, *, whole: bool) -> str:
    """Every attempt under a line naming it; one asked-for attempt as it printed, nothing added."""
    if whole:
        return found.render()
    return "".join(a.text for a in found.attempts)


def _render(t: TaskInfo, io: dict[str, ResultInfo], children: list[TaskInfo], logs: dict[int, AttemptLog]) -> None:
    out = console()
    runs = f"{t.label} ({t.handler})" if t.label else t.handler
    out.print(f"[bold]task {t.task_id}[/bold]  {runs}  {styled(t.status)}  session {t.session_id}")
    out.print(f"parent: {t.parent_task_id or '-'}   attempt {t.attempt}")
    out.print(f"options: {t.options}")
    out.print(f"created {fmt_time(t.created_at)}  submitted {fmt_time(t.submitted_at)}  "
              f"started {fmt_time(t.started_at)}  ended {fmt_time(t.ended_at)}")
    spans = Table("phase", "time", title="timings")
    for phase, value in timings(t).items():
        spans.add_row(phase, fmt_seconds(value))
    m = t.metrics or {}
    if "bytes_in" in m or "bytes_out" in m:
        spans.add_row("bytes in / out", f"{fmt_bytes(m.get('bytes_in'))} / {fmt_bytes(m.get('bytes_out'))}")
    if "memory_peak" in m:  # the child's resident memory at its highest, sampled by the heartbeat
        spans.add_row("memory peak", fmt_bytes(m.get("memory_peak")))
    out.print(spans)
    data = Table("role", "result", "name", "status", "size", "producer", title="inputs and outputs")
    for role, ids in (("input", t.data_dependencies), ("output", t.expected_outputs)):
        for rid in ids:
            r = io.get(rid)
            data.add_row(_input_role(t, rid) if role == "input" else role, rid, (r.name or "") if r else "",
                         styled(r.status) if r else "?",
                         fmt_bytes(r.size) if r else "-", (r.owner_task_id or "client") if r else "-")
    out.print(data)
    if t.remaining:
        out.print(f"waiting on: {', '.join(t.remaining)}")
    for a in t.attempts:
        out.print(f"[bold]attempt {a.number}[/bold] on {a.worker or '?'}: {a.outcome}  "
                  f"{fmt_time(a.started_at)} -> {fmt_time(a.ended_at)}")
        if a.machine is not None:
            out.print(f"  machine: {a.machine.summary()}", markup=False, highlight=False)
        if a.error_type or a.message:
            out.print(f"  {a.error_type or 'error'}: {a.message or ''}")
        if a.traceback:
            out.print(a.traceback.rstrip(), markup=False, highlight=False)
        log = logs.get(a.number)
        if log is not None and log.text:
            lines = log.text.rstrip("\n").splitlines()
            shown = lines[-SHOW_LOG_LINES:]
            more = f", last {len(shown)} lines: skyloom tasks logs {t.task_id} --attempt {a.number}" \
                if len(lines) > len(shown) else ""
            out.print(f"  printed {fmt_bytes(log.bytes)}{more}")
            out.print("\n".join(f"  | {line}" for line in shown), markup=False, highlight=False)
    if t.error:
        out.print(f"[red]final error[/red]: {t.error.get('type') or ''} {t.error.get('message') or ''}".rstrip())
    if children:
        out.print(f"children ({len(children)}): " + ", ".join(f"{c.task_id} {styled(c.status)}" for c in children))


def _input_role(t: TaskInfo, rid: str) -> str:
    """"input", with its kind of dependency when it is not mandatory, and whether it was aborted
    (the failure cascade stopped at this task)."""
    kinds = [k for k, ids in (("optional", t.optional_dependencies), ("lazy", t.lazy_dependencies)) if rid in ids]
    if rid in t.aborted_inputs:
        kinds.append("aborted: ran without it")
    return f"input ({', '.join(kinds)})" if kinds else "input"


def _render_checkpoints(saved: CheckpointInfo) -> None:
    """How many checkpoints the task took and who resumed from which; nothing if it took none."""
    if not saved.taken:
        return
    out = console()
    state = "dropped (the task completed)" if saved.dropped else ("in S3" if saved.in_s3 else "inline")
    out.print(f"checkpoints: {saved.taken} taken, {fmt_bytes(saved.total_bytes)} in all; latest #{saved.latest_seq} "
              f"by attempt {saved.latest_attempt}, {fmt_bytes(saved.latest_size)}, {state}")
    for r in saved.resumes:
        out.print(f"  attempt {r.attempt} resumed from checkpoint #{r.seq} of attempt {r.from_attempt}")


@app.command()
def cancel(
    session_id: Annotated[str, typer.Argument(help="The session of the tasks.")],
    task_ids: Annotated[list[str], typer.Argument(help="Task ids.")],
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel tasks: queued ones never start, running ones stop at their next heartbeat."""
    with connected(endpoint) as client:
        done = client.cancel_tasks(session_id, task_ids)
        if as_json:
            print_json({"tasks": done})
            return
        for t in done:
            console().print(f"task {t.task_id}: {styled(t.status)}")
