"""REST bodies of the measurements API (``/metrics``): values recorded under business keys by tasks,
and run-time history per handler or function. Shared by ``functions/submit`` and the SDK, like
:mod:`skyloom.core.protocol`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from skyloom.core import limits
from skyloom.options import MetricKey, MetricName


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricValue(_Body):
    """One recorded value of ``name`` under the business key ``key``, and which task recorded it."""

    key: str
    name: str
    value: float
    recorded_at: float = Field(description="Unix time the task recorded it")
    session_id: str | None = None
    task_id: str | None = None


class LatestRequest(_Body):
    """(key, name) pairs whose last values to read."""

    pairs: list[tuple[MetricKey, MetricName]] = Field(min_length=1, max_length=limits.METRICS_PER_TASK.value)


class LatestResponse(_Body):
    """The last value of each asked pair that has one, in the order asked."""

    values: list[MetricValue]


class MetricKeyInfo(_Body):
    """Every name recorded under a key, each with its last value (names in order)."""

    key: str
    latest: list[MetricValue]


class MetricHistory(_Body):
    """Values of one (key, name), newest first; ask again with ``before`` = the last ``recorded_at``
    for older ones (absent ``next_before``: there are none)."""

    key: str
    name: str
    values: list[MetricValue]
    next_before: float | None = None


class DurationWindow(_Body):
    """Run times of one minute (every worker's together)."""

    start: float
    count: int
    mean: float


class DurationStats(_Body):
    """Run times (user code, seconds) of one handler or function across sessions, from per-minute
    histograms: percentiles are bucket upper bounds, within 25% above the true value."""

    label: str
    since: float
    until: float
    count: int
    mean: float | None = None
    #: Mean of the last ``moving_windows`` minutes that ran it: where the duration is heading.
    moving_average: float | None = None
    moving_windows: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    windows: list[DurationWindow] = Field(default_factory=list)
