"""The identities and environment of local mode.

There is no IAM in local mode, but the system still sees callers as AWS does: the SDK signs each
request with SigV4, the gateway verifies the signature against the secret it knows for the access
key id (:class:`LocalCredentialStore`) and turns the key id into the IAM user ARN that API Gateway
would put in the event. Every process (the in-process functions, the worker agents, ``skyloom local
run`` commands) reaches the emulator with the default dummy credentials.

More identities make isolation testable on a laptop: :func:`mint_identity` (``skyloom local
identity NAME``) adds a key id and a random secret to ``identities.json`` in the stack's run
directory, which the gateway re-reads when it changes; ``SKYLOOM_LOCAL_IDENTITIES`` (``key:secret``
pairs, comma-separated) adds fixed ones to a stack started with it in its environment.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path

#: Access key id of the default local caller; its principal is ``local_user_arn(LOCAL_ACCESS_KEY_ID)``.
LOCAL_ACCESS_KEY_ID = "skyloom-local"
#: Secret of the default local caller. Public by design: it only opens a loopback stack.
LOCAL_SECRET_ACCESS_KEY = "skyloom-local-secret"
#: File of minted identities (``{"identities": {key_id: secret}}``) in a stack's run directory.
IDENTITIES_FILE = "identities.json"
#: Extra identities from the environment: ``key:secret[,key:secret...]``.
IDENTITIES_ENV = "SKYLOOM_LOCAL_IDENTITIES"
#: What a local key id may be: an IAM user name (it becomes ``user/<key id>``), without ``/``
#: (the SigV4 credential scope is ``/``-separated) and not the default key.
_KEY_ID = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
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


def _parse_env_identities(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for i, pair in enumerate(p for p in raw.split(",") if p.strip()):
        key, sep, secret = pair.strip().partition(":")
        if not sep or not _KEY_ID.match(key) or not secret:
            raise ValueError(f"{IDENTITIES_ENV}: entry #{i} must be key:secret with an IAM-user-like key id")
        found[key] = secret
    return found


class LocalCredentialStore:
    """The secrets the local gateway verifies signatures with: access key id -> secret access key.

    Holds the default local key, the ``SKYLOOM_LOCAL_IDENTITIES`` of the environment it was created
    in, and the identities minted into ``path`` (re-read when the file changes, so an identity minted
    by another process while the stack runs is usable at once).

    Args:
        path: The ``identities.json`` of a run directory, or None for none.
        environ: Where ``SKYLOOM_LOCAL_IDENTITIES`` is read (``os.environ`` by default).
    """

    def __init__(self, path: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        extra = _parse_env_identities(env.get(IDENTITIES_ENV, ""))
        self._fixed = {**extra, LOCAL_ACCESS_KEY_ID: LOCAL_SECRET_ACCESS_KEY}  # the default key cannot be redefined
        self._path = path
        self._lock = threading.Lock()
        self._file_stamp: tuple[int, int] | None = None
        self._file: dict[str, str] = {}

    def secret_for(self, access_key_id: str) -> str | None:
        """The secret of ``access_key_id``, or None if the key is unknown."""
        if access_key_id in self._fixed:
            return self._fixed[access_key_id]
        return self._minted().get(access_key_id)

    def _minted(self) -> dict[str, str]:
        if self._path is None:
            return {}
        with self._lock:
            try:
                st = self._path.stat()
            except FileNotFoundError:
                self._file_stamp, self._file = None, {}
                return {}
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._file_stamp:
                self._file = _read_identities(self._path)
                self._file_stamp = stamp
            return self._file


def _read_identities(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a half-written or foreign file: no minted identity rather than a crashed gateway
    ids = data.get("identities") if isinstance(data, dict) else None
    if not isinstance(ids, dict):
        return {}
    return {k: v for k, v in ids.items() if isinstance(k, str) and isinstance(v, str) and _KEY_ID.match(k)}


def mint_identity(run_dir: Path, name: str) -> tuple[str, str]:
    """Add the local identity ``name`` to a run directory; returns ``(access_key_id, secret)``.

    Idempotent: minting an existing name returns its secret, so a script can run twice. The caller
    is then ``local_user_arn(name)``. The file is written atomically with mode 0600.

    Raises:
        ValueError: ``name`` is not a valid key id or is the default local key.
    """
    if not _KEY_ID.match(name):
        raise ValueError(f"identity name {name!r} must be 1-64 characters of letters, digits and +=,.@_-")
    if name == LOCAL_ACCESS_KEY_ID:
        raise ValueError(f"{name!r} is the default local identity; pick another name")
    path = run_dir / IDENTITIES_FILE
    identities = _read_identities(path)
    if name in identities:
        return name, identities[name]
    secret = secrets.token_urlsafe(30)
    identities[name] = secret
    tmp = path.with_name(f".{IDENTITIES_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"identities": identities}, f, indent=2)
    os.replace(tmp, path)
    return name, secret
