"""Finding the running local stack from another shell or process.

While a local stack runs (``skyloom local up``, or the embedded one ``skyloom.connect()`` starts when
there is none) it writes ``$SKYLOOM_HOME/local.json`` (``~/.skyloom`` by default) with its endpoint
and PID, and removes it when it stops. :func:`discover` returns that endpoint when the process is
still alive, so the SDK and the CLI connect to the same stack without configuration.

A stack takes seconds to start. Meanwhile ``$SKYLOOM_HOME/starting.json`` names the process that
is starting one, and :func:`discover` asked to wait does so (bounded) instead of answering "none":
a client started next to ``skyloom local up`` then uses that stack, not a second, hidden one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skyloom.errors import ConnectionFailed

if TYPE_CHECKING:
    from skyloom.local.stack import LocalStack

#: Directory of local-mode state (state file, run directories).
HOME_ENV = "SKYLOOM_HOME"
STATE_FILE = "local.json"
STARTING_FILE = "starting.json"
#: How long :func:`discover` waits, by default, for a stack that is starting: moto, the resources,
#: the functions' cold starts and the agents take a few seconds, far more on a loaded machine.
START_WAIT_SECONDS = 120.0
#: How often a waiting :func:`discover` looks again.
_POLL_SECONDS = 0.2
#: ``LocalState.kind`` of a stack run by ``skyloom local up`` / ``local run``.
KIND_CLI = "cli"
#: ``LocalState.kind`` of the stack ``skyloom.connect()`` started inside a client's process.
KIND_EMBEDDED = "embedded"


def skyloom_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".skyloom")


def state_path() -> Path:
    return skyloom_home() / STATE_FILE


@dataclass(frozen=True)
class LocalState:
    """What a running local stack publishes."""

    endpoint: str
    aws_endpoint: str
    region: str
    stack: str
    pid: int
    run_dir: str
    #: Who runs it: :data:`KIND_CLI` or :data:`KIND_EMBEDDED` (stops with its client's process).
    kind: str = KIND_CLI
    #: Where SQS is served, when not at ``aws_endpoint`` (the embedded stack's queue emulator).
    sqs_endpoint: str = ""

    @classmethod
    def of(cls, stack: LocalStack, kind: str = KIND_CLI) -> LocalState:
        """What ``stack``, started by this process, publishes."""
        return cls(endpoint=stack.endpoint, aws_endpoint=stack.aws_endpoint, region=stack.settings.region,
                   stack=stack.settings.stack, pid=os.getpid(), run_dir=str(stack.run_dir), kind=kind,
                   sqs_endpoint=stack.sqs_endpoint)


@dataclass(frozen=True)
class Starting:
    """A process that is starting a local stack and will publish it when it is up."""

    pid: int
    since: float
    run_dir: str | None = None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def publish(state: LocalState) -> Path:
    """Write the state file atomically (a reader never sees half of it)."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_state() -> LocalState | None:
    """The published state of a live local stack, or None (no file, unreadable, or process gone)."""
    try:
        raw = json.loads(state_path().read_text())
        state = LocalState(**raw)
    except (OSError, ValueError, TypeError):
        return None
    return state if _alive(state.pid) else None


def discover(wait: float = 0.0) -> str | None:
    """Endpoint of the running local stack, or None.

    Args:
        wait: Seconds to wait for a stack that another process is starting (see
            :func:`mark_starting`); 0 answers at once.

    Raises:
        ConnectionFailed: a stack is still starting after ``wait`` seconds.

    Example:
        >>> discover(wait=START_WAIT_SECONDS)     # after `skyloom local up` in another terminal
        'http://127.0.0.1:8765'
    """
    deadline = time.monotonic() + wait
    while True:
        state = read_state()
        if state is not None:
            return state.endpoint
        pending = starting()
        if pending is None:
            # Its starter publishes, then clears the marker: look again, or it may slip between.
            state = read_state()
            return state.endpoint if state is not None else None
        if wait <= 0:
            return None
        if time.monotonic() >= deadline:
            where = f"; its logs are in {pending.run_dir}" if pending.run_dir else ""
            raise ConnectionFailed(
                f"a local stack (pid {pending.pid}) has been starting for {time.time() - pending.since:.0f} s "
                f"and is not up yet{where}; wait for it, stop it, or set SKYLOOM_ENDPOINT",
                details={"pid": pending.pid, "run_dir": pending.run_dir},
            )
        time.sleep(_POLL_SECONDS)


def starting_path() -> Path:
    return skyloom_home() / STARTING_FILE


def starting() -> Starting | None:
    """The live process starting a local stack, or None (no marker, unreadable, or process gone)."""
    try:
        marker = Starting(**json.loads(starting_path().read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return marker if _alive(marker.pid) else None


def mark_starting(run_dir: str | None = None, *, exclusive: bool = False) -> bool:
    """Say that this process is starting a local stack, so that clients wait for it.

    Args:
        run_dir: Where the stack's logs will be, for a client that waits too long.
        exclusive: Only if no live process says so already (two clients must not both start one);
            ``skyloom local up`` takes the marker whatever it finds: a person asked for that stack.

    Returns:
        Whether this process now holds the marker.
    """
    path = starting_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(Starting(pid=os.getpid(), since=time.time(), run_dir=run_dir))) + "\n"
    if not exclusive:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return True
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = starting()
            if holder is not None:
                return holder.pid == os.getpid()
            # A dead holder's marker (or one being written this instant): clear it once, retry.
            _remove_if_stale(path)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    return False


def _remove_if_stale(path: Path) -> None:
    try:
        raw = json.loads(path.read_text())
        pid = int(raw["pid"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, KeyError):
        # Half written by a live process, or garbage: garbage only if it stays so.
        time.sleep(_POLL_SECONDS)
        if starting() is not None:
            return
        pid = -1
    if not _alive(pid):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def unmark_starting(pid: int | None = None) -> None:
    """Remove the starting marker if it belongs to ``pid`` (this process by default)."""
    _remove_owned(starting_path(), os.getpid() if pid is None else pid)


def unpublish(pid: int | None = None) -> None:
    """Remove the state file if it belongs to ``pid`` (this process by default), so that stopping
    one stack never hides another that started later."""
    _remove_owned(state_path(), os.getpid() if pid is None else pid)


def _remove_owned(path: Path, owner: int) -> None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(raw, dict) and raw.get("pid") == owner:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
