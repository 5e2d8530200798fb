"""Who and what a partition agrees to run: the identity and handler allow-lists of a partition.

A partition is a fleet of workers. When several teams share a deployment, a fleet should only run
the work of the teams it is meant for, and a shared fleet should not run arbitrary code shipped by
value (``skyloom.call`` unpickles whatever the client sent). The rules live on
:class:`~skyloom.core.resources.PartitionSpec`; this module evaluates them, in three places that
must agree: client submissions (``submission``, ``sessions``), subtasks staged by a running task
(``execution``, where the identity is the session owner), and, defensively, the worker's runtime
before it resolves a handler (``skyloom.runtime.executor``).

Identity patterns are ``fnmatch`` globs over the principal ARN that API Gateway authenticated
(``requestContext.identity.userArn``), matched case-sensitively as IAM compares ARNs. A pattern for
an IAM role also admits that role's assumed-role sessions, because a caller on a role is reported
as ``arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION``, never as the role's own ARN.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from skyloom.core.resources import CODE_BY_VALUE_HANDLER, PartitionSpec
from skyloom.errors import Forbidden

_ROLE_ARN = re.compile(r"^arn:(?P<partition>[^:]+):iam::(?P<account>[^:]*):role/(?:.*/)?(?P<name>[^/]+)$")


def _patterns_for(pattern: str) -> tuple[str, ...]:
    """``pattern`` and, for an IAM role pattern, the pattern of its assumed-role sessions.

    Role paths are dropped because assumed-role ARNs do not carry them.
    """
    match = _ROLE_ARN.match(pattern)
    if match is None:
        return (pattern,)
    return (pattern, f"arn:{match['partition']}:sts::{match['account']}:assumed-role/{match['name']}/*")


def identity_allowed(spec: PartitionSpec, principal: str) -> bool:
    """True if ``principal`` may run work on the partition (an empty allow-list admits everyone)."""
    if not spec.allowed_identities:
        return True
    return any(fnmatchcase(principal, p) for pattern in spec.allowed_identities for p in _patterns_for(pattern))


def handler_refusal(spec: PartitionSpec, handler: str) -> str | None:
    """Why the partition refuses ``handler``, or None when it accepts it."""
    if handler == CODE_BY_VALUE_HANDLER and spec.installed_handlers_only:
        return (
            f"partition {spec.name!r} runs installed handlers only: it refuses code shipped by value "
            f"({CODE_BY_VALUE_HANDLER}, i.e. @skyloom.task functions). Register the function as a named "
            "handler in the worker image (@skyloom.handler), or use a partition that accepts it"
        )
    if spec.allowed_handlers and not any(fnmatchcase(handler, p) for p in spec.allowed_handlers):
        return (
            f"partition {spec.name!r} does not run handler {handler!r} "
            f"(allowed: {', '.join(spec.allowed_handlers)})"
        )
    return None


def require_identity(spec: PartitionSpec, principal: str, field: str) -> None:
    """Raise Forbidden (403) naming ``field`` if the partition does not admit ``principal``."""
    if not identity_allowed(spec, principal):
        raise Forbidden(
            f"identity {principal} may not use partition {spec.name!r}; "
            "ask its operators to add you to its allowed_identities",
            field=field,
            details={"partition": spec.name},
        )


def require_handler(spec: PartitionSpec, handler: str, field: str) -> None:
    """Raise Forbidden (403) naming ``field`` if the partition refuses ``handler``."""
    reason = handler_refusal(spec, handler)
    if reason is not None:
        raise Forbidden(reason, field=field, details={"partition": spec.name, "handler": handler})
