"""Who is calling: the IAM principal that API Gateway authenticated.

The REST API uses IAM authorization, so by the time an event reaches this Lambda, API Gateway has
verified the SigV4 signature and written the principal into ``requestContext.identity``. That
principal's ARN is the *owner* of everything the caller creates: sessions, results and tasks are
stored with it, and the core refuses any object whose owner differs (invariant 6).

The owner is the principal ARN verbatim: ``arn:aws:iam::ACCOUNT:user/NAME`` for users, and
``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`` for callers on a role, session name included, so
two people sharing a role are still two owners (``docs/security-model.md``). The same string is
matched against partitions' ``allowed_identities`` (``skyloom.core.access``).

We never trust a header or a body field for identity: only what API Gateway put in the request
context. An event without a principal (a misconfigured route without IAM auth, a test event) is
refused with 401 rather than served as some default user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler.request import Request

from skyloom.errors import Unauthorized

#: Fields of ``requestContext.identity`` tried in order. ``userArn`` is the stable, readable
#: principal; ``caller`` (the principal id) and ``accessKey`` are fall-backs for event sources that
#: omit the ARN, so that an authenticated caller is never mistaken for an anonymous one.
IDENTITY_FIELDS: tuple[str, ...] = ("userArn", "caller", "accessKey")


def principal_of(event: Mapping[str, Any]) -> str | None:
    """The authenticated principal of a raw API Gateway proxy event, or ``None`` if there is none.

    Reads the raw dict with ``.get`` at each level because test events and misrouted requests may
    lack ``requestContext`` or ``identity`` altogether; that must become a 401, not a KeyError (500).
    """
    context = event.get("requestContext")
    if not isinstance(context, Mapping):
        return None
    identity = context.get("identity")
    if not isinstance(identity, Mapping):
        return None
    for name in IDENTITY_FIELDS:
        value = identity.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def current_owner(request: Request) -> str:
    """Route dependency (``Depends(current_owner)``): the owner string of the current request.

    Raises:
        Unauthorized: API Gateway supplied no principal; mapped to 401 ``unauthorized``.
    """
    principal = principal_of(request.resolved_event.raw_event)
    if principal is None:
        raise Unauthorized(
            "the request carries no authenticated IAM principal; sign it with AWS SigV4",
            field="requestContext.identity",
        )
    return principal
