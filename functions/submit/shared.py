"""What every route of the REST API shares: observability, dependencies, parameter types, answers.

Its own module so that the route modules (:mod:`.routes`, and :mod:`.lifecycle_routes` on its own
router) import it instead of each other. Powertools' objects (logger, tracer, metrics) live here
rather than in ``handler.py`` because the routes and the error handlers use them too.
"""

from __future__ import annotations

import functools
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from skyloom.core import models
from skyloom.core.aws import client
from skyloom.core.config import Settings
from skyloom.core.dispatching import queue_urls_by_priority
from skyloom.core.protocol import ID_PATTERN, ErrorBody
from skyloom_server.functions.submit.identity import current_owner

SERVICE = "skyloom-submit"
METRICS_NAMESPACE = "Skyloom"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)


@functools.cache
def _settings_from_env() -> Settings:
    return Settings.from_env()


def current_settings() -> Settings:
    """Route dependency: the settings of this process, with the pynamodb models bound to them.

    Read from the environment once per process (cold start). ``bind`` is repeated per request only
    because it is a no-op when already bound and makes a process that hosts several stacks (tests)
    safe; tests that change the environment call :func:`reset_settings`.
    """
    settings = _settings_from_env()
    models.bind(settings)
    return settings


def warm() -> None:
    """Lambda's init phase: make the AWS clients and find the queues before the first request.

    Otherwise each container paid for them inside its first submission (about 100 ms: botocore
    loads a service model per client, and each queue's URL is a call), while that submission's
    first tasks waited to be queued. A failure is only logged: the request path makes them as before.
    """
    try:
        settings = current_settings()
        for service in ("dynamodb", "sqs", "s3"):
            client(service, settings)
        for partition in settings.partitions:
            queue_urls_by_priority(settings, partition.name)
    except Exception:
        logger.exception("could not make the AWS clients ahead of the first request")


def reset_settings() -> None:
    """Forget the settings read from the environment, for tests that point it at another stack."""
    _settings_from_env.cache_clear()


# The parameter types of the routes: dependencies first, then path ids validated like body ids.
Owner = Annotated[str, Depends(current_owner)]
CurrentSettings = Annotated[Settings, Depends(current_settings)]
SessionId = Annotated[str, Path(pattern=ID_PATTERN, description="A session id.")]
ResultId = Annotated[str, Path(pattern=ID_PATTERN, description="A result id.")]
TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="A task id.")]


# --------------------------------------------------------------------------------- documentation
_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request; `field` names the first bad field (nothing was written).",
    401: "No authenticated IAM principal (sign requests with SigV4).",
    403: "API Gateway refused the SigV4 signature, or a partition does not admit the caller or the handler "
    "(`forbidden`; nothing was written). Another identity's objects are 404, never 403.",
    404: "No such session, result or task visible to the caller.",
    409: "The object's state does not allow the operation (e.g. closed session).",
    413: "Inline data or the request body exceeds a named limit (nothing was written).",
    415: "The request body is not JSON.",
    500: "Internal error; `details.request_id` identifies it in the logs.",
}


def responses(success: int, *, body: bool, session: bool = True, path: bool = False) -> dict[int, OpenAPIResponse]:
    """The documented answers of a route: its model on success, :class:`ErrorBody` otherwise.

    ``path``: the route has path parameters, so a path whose parameter does not match (say, a key
    with characters no key has) names no route: 404, as for a session route's unknown ids.
    """
    codes = [400, 401, 403]
    if session or path:
        codes.append(404)
    if session:
        codes.append(409)
    if body:
        codes += [413, 415]
    codes.append(500)
    documented: dict[int, OpenAPIResponse] = {success: {"description": "Created" if success == 201 else "OK"}}
    for code in codes:
        documented[code] = {
            "description": _ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"model": ErrorBody}},
        }
    return documented
