"""``client.metrics``: read the measurements tasks recorded under business keys, and run-time history.

Values are written by tasks (``skyloom.metrics.record``) and kept across sessions; see
:mod:`skyloom.core.measurements` for how they are stored and how long.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from skyloom.core import limits
from skyloom.core.protocol_metrics import (
    DurationStats,
    LatestRequest,
    LatestResponse,
    MetricHistory,
    MetricKeyInfo,
    MetricValue,
)
from skyloom.options import check_metric, check_metric_key

#: ``Client._call``: (method, path, body, response model) -> parsed response.
Call = Callable[[str, str, BaseModel | None, type[Any]], Any]


class Metrics:
    """Measurements of the caller's identity. Reached as ``client.metrics``.

    Example:
        >>> client.metrics.latest("TRD-42", "seconds_per_path").value
        0.00012
        >>> [v.value for v in client.metrics.history("TRD-42", "seconds_per_path", limit=3)]
        [0.00012, 0.00013, 0.00011]
    """

    def __init__(self, call: Call) -> None:
        self._call = call

    def latest(self, key: str, name: str) -> MetricValue | None:
        """The last value recorded as ``name`` under ``key``; None if there is none (or it expired).

        Raises:
            InvalidArgument: a key or name that cannot exist (nothing is sent).
        """
        found = self.latest_many([(key, name)])
        return found.get((key, name))

    def latest_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], MetricValue]:
        """The last values of several pairs, one request per ``limits.METRICS_PER_TASK`` of them."""
        wanted = list(dict.fromkeys(pairs))
        for key, name in wanted:
            check_metric(key, name)
        out: dict[tuple[str, str], MetricValue] = {}
        step = limits.METRICS_PER_TASK.value
        for i in range(0, len(wanted), step):
            resp: LatestResponse = self._call("POST", "/metrics/latest", LatestRequest(pairs=wanted[i:i + step]),
                                              LatestResponse)
            out.update({(v.key, v.name): v for v in resp.values})
        return out

    def history(self, key: str, name: str, *, limit: int = 100, before: float | None = None) -> list[MetricValue]:
        """Up to ``limit`` values of ``name`` under ``key``, newest first (``before``: older than
        that epoch time), read a page at a time."""
        check_metric(key, name)
        out: list[MetricValue] = []
        while len(out) < limit:
            size = min(limit - len(out), limits.METRICS_HISTORY_PAGE.value)
            page: MetricHistory = self._call(
                "GET", f"/metrics/{quote(key, safe='')}/{quote(name, safe='')}?{_query(limit=size, before=before)}",
                None, MetricHistory)
            out += page.values
            if page.next_before is None:
                break
            before = page.next_before
        return out

    def show(self, key: str) -> MetricKeyInfo:
        """Every name recorded under ``key``, each with its last value."""
        check_metric_key(key)
        info: MetricKeyInfo = self._call("GET", f"/metrics/{quote(key, safe='')}", None, MetricKeyInfo)
        return info

    def durations(self, label: str, *, since: float | None = None, until: float | None = None) -> DurationStats:
        """Run times of a handler or ``@skyloom.task`` function (``module.qualname``) across sessions:
        count, mean, moving average of the last minutes that ran it, percentiles (default: last week)."""
        stats: DurationStats = self._call("GET", f"/durations?{_query(label=label, since=since, until=until)}", None,
                                          DurationStats)
        return stats


def _query(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v is not None})
