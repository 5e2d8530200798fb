"""Pydantic validation errors as :class:`~skyloom.errors.InvalidRequest`, described one way.

Its own module because both the request models (:mod:`skyloom.core.protocol`) and the task options
(:mod:`skyloom.options`, which the protocol imports) raise through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from skyloom.errors import InvalidRequest

#: At most this many validation errors are listed in ``details.errors``: enough to fix a request,
#: bounded so that a 1000-task submission with one mistake per task cannot produce a huge answer.
MAX_LISTED_ERRORS = 20

#: Keys of a pydantic error's ``ctx`` that hold the bound it crossed, reported as ``limit``.
_BOUND_KEYS = ("max_length", "min_length", "le", "ge", "lt", "gt")


def _dotted(loc: Sequence[Any], error_type: str) -> str:
    return ".".join(str(p) for p in loc) or "body"


def invalid_request(
    errors: Sequence[Mapping[str, Any]],
    field_of: Callable[[Sequence[Any], str], str] = _dotted,
    cls: type[InvalidRequest] = InvalidRequest,
) -> InvalidRequest:
    """The :class:`InvalidRequest` equivalent of pydantic errors, first error first.

    Shared by the API (``functions/submit/errors.py``, which names fields relative to the body) and
    the SDK (which builds requests from these models), so both describe a bad field the same way.
    Only ``loc``, ``type``, ``msg`` and a numeric bound are kept: ``input`` may echo a multi-megabyte
    payload and ``ctx`` may hold exception objects.
    """
    listed: list[dict[str, Any]] = []
    for e in errors[:MAX_LISTED_ERRORS]:
        item: dict[str, Any] = {
            "field": field_of(tuple(e.get("loc", ())), str(e.get("type", ""))),
            "type": str(e.get("type", "invalid")),
            "message": str(e.get("msg", "invalid value")),
        }
        ctx = e.get("ctx")
        if isinstance(ctx, Mapping):
            bound = next((ctx[k] for k in _BOUND_KEYS if isinstance(ctx.get(k), int | float)), None)
            if bound is not None:
                item["limit"] = bound
        listed.append(item)
    if not listed:
        return cls("the request is invalid", field="body")
    first = listed[0]
    message = f"{first['field']}: {first['message']}"
    if first["type"] == "json_invalid":
        message = "the request body is not valid JSON"
    elif first["type"] == "missing" and first["field"] == "body":
        message = "the request body is required (a JSON object)"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    details: dict[str, Any] = {"errors": listed}
    if "limit" in first:
        details["limit"] = first["limit"]
    if len(errors) > MAX_LISTED_ERRORS:
        details["truncated"] = len(errors) - MAX_LISTED_ERRORS
    return cls(message, field=first["field"], details=details)
