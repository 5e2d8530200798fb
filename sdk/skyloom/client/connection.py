"""``skyloom.connect()``: find an endpoint and credentials, and return a ready client.

Endpoint, first match wins: the argument, ``SKYLOOM_ENDPOINT``, the running local stack (``skyloom
local up``, waited for while it starts), else an embedded local stack this process starts, says so
on stderr, publishes for the CLI and keeps for every later ``connect()`` until it exits
(:mod:`skyloom.local.embedded`). The local modules need the optional ``skyloom[local]`` extra
(moto), so they are imported only on those last two paths: a worker or a Lambda never loads them.
"""

from __future__ import annotations

import atexit
import importlib
import ipaddress
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from skyloom.client import backend
from skyloom.client.http import HttpTransport
from skyloom.client.lowlevel import Client
from skyloom.errors import ConnectionFailed, Unauthorized
from skyloom.extras import MissingExtra

if TYPE_CHECKING:
    from botocore.credentials import Credentials

ENV_ENDPOINT = "SKYLOOM_ENDPOINT"
#: What the local stack's API accepts; any key works there, these are its documented defaults.
LOCAL_CREDENTIALS = ("skyloom-local", "skyloom-local-secret")
#: Credentials for Skyloom only, taking precedence over local defaults and the boto3 chain: how a
#: shell (or the CLI) acts as another identity, e.g. one minted by ``skyloom local identity``.
ENV_ACCESS_KEY = "SKYLOOM_ACCESS_KEY_ID"
ENV_SECRET_KEY = "SKYLOOM_SECRET_ACCESS_KEY"
ENV_SESSION_TOKEN = "SKYLOOM_SESSION_TOKEN"
DEFAULT_REGION = "us-east-1"
_API_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")

CredentialsLike = tuple[str, str] | tuple[str, str, str] | Any


def connect(
    endpoint: str | None = None,
    *,
    region: str | None = None,
    credentials: CredentialsLike | None = None,
) -> Client:
    """Connect to Skyloom; the client is also where ``fn.submit()`` goes outside a session.

    Args:
        endpoint: API base URL, e.g. ``https://abc123.execute-api.eu-west-1.amazonaws.com/prod``.
        region: signing region; defaults to the endpoint's, then ``AWS_REGION``, then us-east-1.
        credentials: ``(access_key, secret_key[, token])`` or botocore credentials; defaults to
            the local stack's credentials on loopback, the boto3 chain elsewhere.

    Raises:
        ConnectionFailed: no endpoint is configured and no local stack can be started, or one
            that another process is starting is not up after two minutes.
        Unauthorized: a remote endpoint and no AWS credentials anywhere.

    Example:
        >>> with skyloom.connect() as client:     # a local stack unless configured for AWS
        ...     print(portfolio.submit(trades).result())
    """
    local = False
    if endpoint is None:
        endpoint = os.environ.get(ENV_ENDPOINT) or None
    if endpoint is None:
        endpoint = _local_endpoint()
        local = True
    creds = _credentials(credentials, local or _is_loopback(endpoint))
    transport = HttpTransport(endpoint, region=region or _region(endpoint), credentials=creds)
    client = Client(transport)
    if local:
        # Registered after the embedded stack's own exit hook, so it runs first: what a script that
        # never closes its client still buffers is sent before the stack stops.
        atexit.register(client.close)
    backend.set_fallback(client.default_session)
    return client


def _local_endpoint() -> str:
    """The running local stack's endpoint (waiting for one that is starting), or an embedded one."""
    try:
        embedded: Any = importlib.import_module("skyloom.local.embedded")
    except ImportError as exc:
        # MissingExtra says which pip install; any other ImportError is a broken [local] install.
        missing = str(exc) if isinstance(exc, MissingExtra) else (
            f"the embedded local stack needs `pip install 'skyloom[local]'` ({exc})"
        )
        raise ConnectionFailed(
            f"no Skyloom endpoint configured: pass connect(endpoint=...) or set {ENV_ENDPOINT}; {missing}"
        ) from exc
    return str(embedded.local_endpoint())


def _credentials(given: CredentialsLike | None, local: bool) -> Credentials:
    """Explicit credentials, else ``SKYLOOM_ACCESS_KEY_ID``/``SKYLOOM_SECRET_ACCESS_KEY``, else local
    ones for a loopback stack, else the boto3 chain.

    A local stack gets the local credentials even when AWS credentials are configured: the owner of
    a session is the signing identity, and ``skyloom local`` tooling signs with the local ones.
    """
    from botocore.credentials import Credentials

    if isinstance(given, tuple):
        return Credentials(*given)
    if given is None and os.environ.get(ENV_ACCESS_KEY):
        if not os.environ.get(ENV_SECRET_KEY):
            raise Unauthorized(f"{ENV_ACCESS_KEY} is set but {ENV_SECRET_KEY} is not", field=ENV_SECRET_KEY)
        return Credentials(
            os.environ[ENV_ACCESS_KEY], os.environ[ENV_SECRET_KEY], os.environ.get(ENV_SESSION_TOKEN) or None
        )
    if given is not None:
        if not hasattr(given, "get_frozen_credentials"):
            raise TypeError(
                "credentials must be (access_key, secret_key[, token]) or botocore credentials, "
                f"got {type(given).__name__}"
            )
        resolved: Credentials = given
        return resolved
    if local:
        return Credentials(*LOCAL_CREDENTIALS)
    import botocore.session

    found: Credentials | None = botocore.session.get_session().get_credentials()
    if found is not None:
        return found
    raise Unauthorized(
        "no AWS credentials found to sign requests: configure them as for the AWS CLI "
        "(AWS_PROFILE, AWS_ACCESS_KEY_ID, SSO...) or pass connect(credentials=(key, secret))"
    )


def _region(endpoint: str) -> str:
    host = urlparse(endpoint).hostname or ""
    m = _API_HOST.search(host)
    if m:
        return m.group(1)
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def _is_loopback(endpoint: str) -> bool:
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
