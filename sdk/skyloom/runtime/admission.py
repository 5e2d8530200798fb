"""The worker's own check that a partition accepts a task's handler, made before resolving it.

The control plane already refuses such tasks at submission (``skyloom.core.access``); this is the
second line, for a task that reaches a worker anyway: written before a partition was restricted,
sent to the wrong queue, or injected by someone able to write the tables. A partition configured
for installed handlers only must never unpickle code shipped by value, so the check runs in the
child before :func:`~skyloom.runtime.registry.resolve_handler`, i.e. before ``skyloom.call`` reads
a single byte of the payload.

The rules come from the same environment the agent is configured with (``SKYLOOM_PARTITIONS``,
``SKYLOOM_PARTITION_POLICIES``, ``SKYLOOM_WORKER_PARTITION``), which the child inherits. Both the
task's partition and the worker's are checked: a fleet's rules hold whatever the task claims.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from skyloom.core.access import handler_refusal
from skyloom.core.config import Settings

#: The partition whose queues this worker drains (set by the CDK stack and ``fargate_worker``).
WORKER_PARTITION_ENV = "SKYLOOM_WORKER_PARTITION"


#: The variables the settings are read from (``Settings.from_env``).
_SETTINGS_PREFIX = ("SKYLOOM_", "AWS_REGION", "AWS_DEFAULT_REGION")


@functools.lru_cache(maxsize=8)
def _settings(environment: tuple[tuple[str, str], ...]) -> Settings:
    """The settings of an environment, read once: a child checks every task it runs against the
    same environment, and reading it (partitions and their rules) cost a quarter of its own time."""
    return Settings.from_env(dict(environment))


class HandlerRefused(PermissionError):
    """The partition does not run this handler; another attempt on the same fleet cannot help."""

    non_retryable = True


def check_admitted(handler: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`HandlerRefused` if the task's or the worker's partition refuses ``handler``.

    Raises:
        HandlerRefused: a partition's ``installed_handlers_only`` or ``allowed_handlers`` forbids it.
        ValueError: the partition rules in the environment are malformed (fail closed, not open).
    """
    env = os.environ if environ is None else environ
    settings = _settings(tuple(sorted((k, v) for k, v in env.items() if k.startswith(_SETTINGS_PREFIX))))
    names = dict.fromkeys(n for n in (options.get("partition"), env.get(WORKER_PARTITION_ENV)) if isinstance(n, str))
    for name in names:
        spec = settings.partition(name)
        if spec is None:
            continue
        reason = handler_refusal(spec, handler)
        if reason is not None:
            raise HandlerRefused(f"refused on this worker: {reason}")
