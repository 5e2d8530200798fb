"""Finding a running ``skyloom local up`` from another shell.

While ``skyloom local up`` runs it writes ``$SKYLOOM_HOME/local.json`` (``~/.skyloom`` by default)
with its endpoint and PID, and removes it when it stops. :func:`discover` returns that endpoint when
the process is still alive, so the SDK and the CLI connect to the local stack without configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

#: Directory of local-mode state (state file, run directories).
HOME_ENV = "SKYLOOM_HOME"
STATE_FILE = "local.json"


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


def discover() -> str | None:
    """Endpoint of a running ``skyloom local up``, or None."""
    state = read_state()
    return state.endpoint if state is not None else None


def unpublish(pid: int | None = None) -> None:
    """Remove the state file if it belongs to ``pid`` (this process by default), so that stopping
    one stack never hides another that started later."""
    owner = os.getpid() if pid is None else pid
    path = state_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(raw, dict) and raw.get("pid") == owner:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
