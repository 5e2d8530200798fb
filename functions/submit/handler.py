"""Lambda entry point of the REST API (API Gateway REST API, proxy integration, IAM auth).

Only observability is wired here; routing, validation and error mapping live in ``routes.py`` and
``errors.py``. Tracing needs no switch for local runs: Powertools disables the tracer by itself
outside Lambda (no ``LAMBDA_TASK_ROOT``), and ``POWERTOOLS_TRACE_DISABLED=true`` disables it anywhere
an X-Ray daemon is absent. Responses are not captured into traces: they may carry inline data, and
X-Ray segments are small.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from skyloom.core import heap
from skyloom_server.functions.submit.routes import app
from skyloom_server.functions.submit.shared import logger, metrics, reset_settings, tracer, warm

__all__ = ["handler", "reset_settings", "warm"]

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # on Lambda, at init (local containers call both)
    warm()
    heap.settle()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Resolve one API Gateway proxy event to its route and return the proxy response."""
    return app.resolve(event, context)
