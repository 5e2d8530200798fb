"""Routes of the measurements API: values tasks recorded under business keys, and run-time history.

Their own router, which ``routes.py`` includes on its resolver (shared validation, errors, identity and
OpenAPI).
Every read is keyed by the caller's identity (:mod:`skyloom.core.measurements` puts the owner in the
partition key), so an identity never sees another's measurements, as with sessions.
"""

from __future__ import annotations

import time
from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from skyloom.core import limits, measurements
from skyloom.core.protocol_metrics import DurationStats, LatestRequest, LatestResponse, MetricHistory, MetricKeyInfo
from skyloom.options import METRIC_KEY_PATTERN, METRIC_NAME_PATTERN
from skyloom_server.functions.submit.shared import CurrentSettings, Owner, responses

MetricKeyPath = Annotated[str, Path(pattern=METRIC_KEY_PATTERN, max_length=limits.METRIC_KEY_LENGTH.value,
                                    description="A business key (e.g. a trade id).")]
MetricNamePath = Annotated[str, Path(pattern=METRIC_NAME_PATTERN, max_length=limits.METRIC_NAME_LENGTH.value,
                                     description="A measurement name.")]
router = Router()
#: Default span of :func:`durations`: the last week.
DEFAULT_DURATION_SPAN = 7 * 86400.0


@router.post(
    "/metrics/latest",
    operation_id="getLatestMetrics",
    summary="The last recorded value of each (key, name) pair",
    tags=["metrics"],
    responses=responses(200, body=True, session=False),
)
def latest_metrics(req: LatestRequest, owner: Owner, settings: CurrentSettings) -> LatestResponse:
    """Pairs never recorded (or expired) are left out."""
    found = measurements.latest(owner, req.pairs)
    return LatestResponse(values=[found[(k, n)] for k, n in dict.fromkeys(req.pairs) if (k, n) in found])


@router.get(
    "/metrics/<key>",
    operation_id="getMetricKey",
    summary="Every measurement recorded under a business key, with its last value",
    tags=["metrics"],
    responses=responses(200, body=False, session=False, path=True),
)
def metric_key(key: MetricKeyPath, owner: Owner, settings: CurrentSettings) -> MetricKeyInfo:
    return MetricKeyInfo(key=key, latest=measurements.latest_by_key(owner, key))


@router.get(
    "/metrics/<key>/<name>",
    operation_id="getMetricHistory",
    summary="The values of one measurement, newest first",
    tags=["metrics"],
    responses=responses(200, body=False, session=False, path=True),
)
def metric_history(
    key: MetricKeyPath, name: MetricNamePath, owner: Owner, settings: CurrentSettings,
    limit: Annotated[int | None, Query(ge=1, le=limits.METRICS_HISTORY_PAGE.value,
                                       description="Values per answer (default 100).")] = None,
    before: Annotated[float | None, Query(description="Only values recorded before this epoch time (s): "
                                                      "the previous answer's `next_before`.")] = None,
) -> MetricHistory:
    size = limit or 100
    values = measurements.history(owner, key, name, limit=size, before=before)
    return MetricHistory(key=key, name=name, values=values,
                         next_before=values[-1].recorded_at if len(values) == size else None)


@router.get(
    "/durations",
    operation_id="getDurations",
    summary="Run times of a handler or function across sessions: moving average and percentiles",
    tags=["metrics"],
    responses=responses(200, body=False, session=False),
)
def durations(
    owner: Owner, settings: CurrentSettings,
    label: Annotated[str, Query(min_length=1, max_length=limits.LABEL_LENGTH.value,
                                description="A handler name, or a function's module.qualname.")],
    since: Annotated[float | None, Query(description="Start, epoch seconds (default: a week ago).")] = None,
    until: Annotated[float | None, Query(description="End, epoch seconds (default: now).")] = None,
) -> DurationStats:
    end = until if until is not None else time.time()
    return measurements.duration_stats(owner, label, since=since if since is not None else end - DEFAULT_DURATION_SPAN,
                                       until=end)
