"""What an attempt runs on: its payload, its inputs' values and the measurements it asked for,
read in as few calls as the values allow (inline values in one BatchGetItem, large ones from S3)."""

from __future__ import annotations

import logging

from skyloom.core import measurements
from skyloom.core.claims import claimed
from skyloom.core.config import Settings
from skyloom.core.models import TaskModel
from skyloom.core.results import abort_errors, fetch_values
from skyloom.runtime.outcome import TaskInput

log = logging.getLogger(__name__)


def load_inputs(settings: Settings, task: TaskModel) -> TaskInput:
    deps = list(task.data_dependencies or [])
    # Lazy inputs are fetched by the task on demand; optional ones that aborted have no value.
    lazy, aborted = set(task.lazy_deps or ()), set(task.aborted_inputs or ())
    if lazy or aborted:
        deps = [d for d in deps if d not in lazy and d not in aborted]
    wanted = deps + ([task.payload_result] if task.payload_result else [])
    values = fetch_values(settings, wanted, session_id=task.session_id)
    payload = task.payload if task.payload is not None else values.get(task.payload_result or "", b"")
    return TaskInput(
        task_id=task.task_id,
        session_id=task.session_id,
        handler=task.handler,
        payload=payload,
        dependencies={d: values[d] for d in deps},
        expected_outputs=list(task.expected_outputs or []),
        options=dict(task.options or {}),
        attempt=int(task.attempt or 0) + (0 if claimed(task) else 1),
        metrics=_asked_metrics(task),
        lazy=sorted(lazy),
        aborted=abort_errors(sorted(aborted)),
    )


def _asked_metrics(task: TaskModel) -> dict[tuple[str, str], float]:
    """The last values of the measurements the task asked for (``options.metrics``): one
    BatchGetItem with the inputs, so that ``skyloom.metrics.latest`` makes no call of its own."""
    pairs = [(str(k), str(n)) for k, n in (task.options or {}).get("metrics") or ()]
    if not pairs:
        return {}
    return {pair: v.value for pair, v in measurements.latest(task.owner, pairs).items()}
