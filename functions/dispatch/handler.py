"""Lambda entry point: the scheduled dispatch sweeper (EventBridge rule, every minute on AWS)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from skyloom.core.config import Settings
from skyloom.core.models import bind
from skyloom_server.functions.dispatch import dead_letters, velocity
from skyloom_server.functions.dispatch.sweeper import sweep

logger = Logger(service="skyloom-dispatch")
tracer = Tracer(service="skyloom-dispatch")
metrics = Metrics(namespace="Skyloom", service="skyloom-dispatch")
#: When this container next publishes the partitions' gauges (once a minute, see ``velocity``).
gauges_cadence = velocity.Cadence()


@cache
def settings() -> Settings:
    """Read once per container (cold start); tests clear the cache to rebuild from their env."""
    s = Settings.from_env()
    bind(s)
    return s


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="SweeperRuns", unit=MetricUnit.Count, value=1)  # a heartbeat for alarms
    done = sweep(settings())
    done.update({f"dead_letter_{k}": v for k, v in dead_letters.drain(settings()).items()})
    for action, count in done.items():
        metrics.add_metric(name=f"Sweeper_{action}", unit=MetricUnit.Count, value=count)
    if done:
        logger.info("sweep", extra={"repairs": dict(done)})
    try:
        if gauges_cadence.due():
            velocity.publish(velocity.read(settings()))
    except Exception:  # the gauges are for people; the sweep's repairs are done and stand
        logger.exception("could not publish the partitions' backlog and shape")
    return {"repairs": dict(done)}


def reset_settings() -> None:
    """Forget the cached settings, as a fresh container would (local mode calls it per stack)."""
    settings.cache_clear()
