"""One long-lived boto3 client per (process, service, settings): creating clients is slow and
clients are thread-safe, so every adapter in a process shares these."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from skyloom.core.config import Settings

_lock = threading.Lock()
_clients: dict[tuple[str, Settings], Any] = {}

_CONFIG = Config(
    retries={"max_attempts": 8, "mode": "adaptive"},
    max_pool_connections=64,
    connect_timeout=5,
    read_timeout=70,
)


def client(service: str, settings: Settings) -> Any:
    key = (service, settings)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                region_name=settings.region,
                endpoint_url=settings.aws_endpoint,
                config=_CONFIG,
            )
            _clients[key] = found
        return found
