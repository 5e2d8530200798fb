"""The identities and environment of local mode.

There is no IAM in local mode, but the system still sees callers as AWS does: the SDK signs each
request with SigV4 using :data:`LOCAL_ACCESS_KEY_ID`, and the gateway turns the key id into the IAM
user ARN that API Gateway would put in the event. Every process (the in-process functions, the worker
agents, ``skyloom local run`` commands) reaches the emulator with these same dummy credentials.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Access key id of the default local caller; its principal is ``local_user_arn(LOCAL_ACCESS_KEY_ID)``.
LOCAL_ACCESS_KEY_ID = "skyloom-local"
#: Secret of the default local caller (signatures are not verified yet; see ``gateway``).
LOCAL_SECRET_ACCESS_KEY = "skyloom-local-secret"
#: The one account of local mode: moto is started with it, and local principals live in it.
LOCAL_ACCOUNT_ID = "000000000000"

#: Variables a client reads to find the Skyloom REST endpoint (the gateway in local mode).
ENDPOINT_ENV = "SKYLOOM_ENDPOINT"

#: Variables removed from every local-mode environment, so that a developer's real AWS profile or
#: session token never leaks into requests sent to the emulator (or fails because it is missing).
_AWS_IDENTITY_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def local_user_arn(access_key_id: str) -> str:
    """The IAM principal local mode assigns to a caller signing with ``access_key_id``."""
    return f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:user/{access_key_id}"


def aws_environment(region: str) -> dict[str, str]:
    """Dummy credentials and region, as every local process sees them."""
    return {
        "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_ACCESS_KEY,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        # No X-Ray daemon listens locally; without this every traced call logs an error.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def scrubbed(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without the variables that would select a real AWS identity."""
    return {k: v for k, v in environ.items() if k not in _AWS_IDENTITY_VARS}


def removed_variables() -> tuple[str, ...]:
    """Names :func:`scrubbed` drops (the stack unsets them in its own process too)."""
    return _AWS_IDENTITY_VARS
