"""The one place where errors become HTTP responses.

Routes never build error responses: they let :class:`~skyloom.errors.SkyloomError` subclasses (from
the core or from this package) propagate, and the handlers registered here turn every failure into
a JSON body shaped like :class:`~skyloom.core.protocol.ErrorBody`::

    {"error": "<code>", "message": "...", "field": "<dotted path>", "details": {...}}

so that the client SDK can rebuild the same exception class from ``error`` (``ERRORS_BY_CODE``) and
point the user at the offending field. The mapping:

- ``SkyloomError``: its ``http_status`` and ``to_json()``.
- Powertools' ``RequestValidationError`` (pydantic, path parameters, malformed JSON): 400
  ``invalid_request`` naming the first bad field (with ``details.limit`` when a named limit was
  crossed); never Powertools' default 422.
- Unsupported content type: 415 ``invalid_request``.
- A base64 body (API Gateway's encoding of non-UTF-8 bytes) that is not UTF-8 text: 400 ``body``.
- No matching route: 404 ``not_found``.
- Anything else (including a response that fails its own model): 500 ``internal`` carrying only the
  request id, with the traceback in the log and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.metrics import MetricUnit

from skyloom.core.validation import MAX_LISTED_ERRORS as MAX_LISTED_ERRORS  # re-exported for callers
from skyloom.core.validation import invalid_request
from skyloom.errors import InvalidRequest, NotFound, SkyloomError

#: Where a validation error points when the JSON of the body itself is broken.
BODY_FIELD = "body"

_PARAMETER_LOCATIONS = frozenset({"path", "query", "header", "cookie"})


def json_response(status: int, body: Mapping[str, Any]) -> Response[dict[str, Any]]:
    """A JSON response; every answer of this API, success or failure, is application/json."""
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=dict(body))


def field_of(loc: Sequence[Any], error_type: str = "") -> str:
    """The dotted path a client understands for a Powertools/pydantic error location.

    ``("body", "tasks", 0, "handler")`` -> ``tasks.0.handler``; ``("path", "session_id")`` ->
    ``session_id``; a missing or unparsable body (``("body",)``, or ``("body", <offset>)`` for
    ``json_invalid``) -> ``body``. The leading location is dropped because the protocol models
    name fields relative to the body, exactly as the core names them in its own errors.
    """
    parts = list(loc)
    if not parts:
        return BODY_FIELD
    where, rest = str(parts[0]), parts[1:]
    if where == "body":
        if error_type == "json_invalid" or not rest:
            return BODY_FIELD
        return ".".join(str(p) for p in rest)
    if where in _PARAMETER_LOCATIONS and rest:
        return str(rest[0])
    return ".".join(str(p) for p in parts)


def validation_error(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """The :class:`InvalidRequest` equivalent of a list of pydantic errors, first error first.

    The SDK describes the same errors with the same function (:func:`skyloom.core.validation.invalid_request`)
    when it refuses a request before sending it; here fields are named relative to the body.
    """
    return invalid_request(errors, field_of)


def _utf8_body(body: str | None) -> bool:
    """Whether a base64 proxy-event body decodes to UTF-8 text (an absent body counts as text)."""
    if body is None:
        return True
    try:
        base64.b64decode(body.encode("ascii")).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        return False
    return True


class _ErrorMapper:
    """Exception handlers of one resolver; holds the app to read the request id and the route."""

    def __init__(self, app: APIGatewayRestResolver, logger: Logger, metrics: Metrics) -> None:
        self._app = app
        self._logger = logger
        self._metrics = metrics

    # -- handlers (registered by install) -------------------------------------------------------
    def skyloom_error(self, exc: SkyloomError) -> Response[dict[str, Any]]:
        """A domain error: its own status and body; a 5xx one is also logged with its traceback."""
        if exc.http_status >= 500:
            self._logger.exception("request failed with a server-side domain error", extra=self._fields(exc))
            self._count("ServerErrors")
        else:
            self._logger.info("request refused", extra=self._fields(exc))
            self._count("ClientErrors")
        return json_response(exc.http_status, exc.to_json())

    def request_validation(self, exc: RequestValidationError) -> Response[dict[str, Any]]:
        """A request the protocol models reject: 400 naming the field (Powertools would say 422).

        Powertools raises the same class when a *response* fails its model (without a response
        validation code configured); that is our bug, not the caller's, so it becomes a 500.
        """
        errors = list(exc.errors())
        if errors and tuple(errors[0].get("loc", ()))[:1] == ("response",):
            return self.unexpected(exc)
        return self.skyloom_error(validation_error(errors))

    def unsupported_content_type(self, exc: RequestUnsupportedContentType) -> Response[dict[str, Any]]:
        """A body that is not JSON: the API speaks nothing else."""
        error = InvalidRequest(
            "the request body must be JSON (Content-Type: application/json)", field="content-type"
        )
        self._logger.info("request refused", extra=self._fields(error))
        self._count("ClientErrors")
        return json_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, error.to_json())

    def undecodable(self, exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
        """A base64-encoded body (what API Gateway sends for bytes that are not UTF-8) that does not
        decode to text: Powertools fails while reading it, before validation. The caller's fault,
        so 400 naming ``body``; a decoding failure anywhere else is our bug and stays a 500."""
        event = self._app.current_event
        if event.is_base64_encoded and not _utf8_body(event.body):
            error = InvalidRequest("the request body is not UTF-8 text; send JSON", field=BODY_FIELD)
            return self.skyloom_error(error)
        return self.unexpected(exc)

    def route_not_found(self, exc: NotFoundError) -> Response[dict[str, Any]]:
        """No route matches the method and path."""
        event = self._app.current_event
        return self.skyloom_error(NotFound(f"no route for {event.http_method} {event.path}", field="path"))

    def service_error(self, exc: ServiceError) -> Response[dict[str, Any]]:
        """A Powertools HTTP error raised by its own machinery: keep its status, use our shape."""
        status = int(exc.status_code)
        if status >= 500:
            return self.unexpected(exc)
        error = InvalidRequest(str(exc.msg))
        self._logger.info("request refused", extra=self._fields(error))
        self._count("ClientErrors")
        return json_response(status, error.to_json())

    def unexpected(self, exc: Exception) -> Response[dict[str, Any]]:
        """Anything else: 500 with the request id only; the traceback goes to the log."""
        request_id = self._request_id()
        self._logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
        self._count("ServerErrors")
        body = {"error": "internal", "message": "internal error", "details": {"request_id": request_id}}
        return json_response(HTTPStatus.INTERNAL_SERVER_ERROR, body)

    # -- helpers --------------------------------------------------------------------------------
    def _request_id(self) -> str:
        """API Gateway's request id (what the caller sees in ``x-amzn-RequestId``), else Lambda's."""
        raw = self._app.current_event.raw_event
        context = raw.get("requestContext")
        if isinstance(context, Mapping) and isinstance(context.get("requestId"), str):
            return str(context["requestId"])
        lambda_context = getattr(self._app, "lambda_context", None)
        return str(getattr(lambda_context, "aws_request_id", "unknown"))

    @staticmethod
    def _fields(exc: SkyloomError) -> dict[str, Any]:
        return {"error": exc.code, "status": exc.http_status, "field": exc.field, "error_message": exc.message}

    def _count(self, name: str) -> None:
        self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def install(app: APIGatewayRestResolver, *, logger: Logger, metrics: Metrics) -> None:
    """Register the error handlers on ``app``.

    Powertools picks the handler of the most specific class in the exception's MRO, so the
    ``Exception`` catch-all only sees what nothing more precise claims.
    """
    mapper = _ErrorMapper(app, logger, metrics)
    app.exception_handler(SkyloomError)(mapper.skyloom_error)
    app.exception_handler(RequestValidationError)(mapper.request_validation)
    app.exception_handler(RequestUnsupportedContentType)(mapper.unsupported_content_type)
    app.exception_handler(UnicodeDecodeError)(mapper.undecodable)
    app.not_found(mapper.route_not_found)
    app.exception_handler(ServiceError)(mapper.service_error)
    app.exception_handler(Exception)(mapper.unexpected)
