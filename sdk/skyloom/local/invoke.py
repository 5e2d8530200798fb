"""Calling a Lambda handler in this process, the way the Lambda runtime calls it.

Local mode feeds the three functions real event shapes; this module supplies the other half of the
contract: the handler found from its ``module:attribute`` path (the CDK ``handler`` string), and a
context object with the attributes Powertools and user code read.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skyloom.local.credentials import LOCAL_ACCOUNT_ID

#: A Lambda handler: ``handler(event, context) -> response``.
Handler = Callable[[dict[str, Any], Any], Any]
#: A handler, or its ``"package.module:attribute"`` path, imported when the stack starts.
HandlerRef = str | Handler


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as ``context``: names, request id, memory and deadline."""

    function_name: str
    region: str
    timeout_seconds: float = 30.0
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{LOCAL_ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id[:8]}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(ref: HandlerRef) -> Handler:
    """Resolve ``"package.module:attribute"`` (or ``package.module.attribute``) to the callable.

    Raises:
        ValueError: the path names no callable.
        ImportError: the module cannot be imported.
    """
    if callable(ref):
        return ref
    module_name, sep, attribute = ref.partition(":")
    if not sep:
        module_name, _, attribute = ref.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"handler path {ref!r} must look like 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"handler {ref!r} is not callable")
    handler: Handler = target
    return handler


#: A function's module may define ``reset_settings()``; local mode calls it before serving events.
COLD_START_HOOK = "reset_settings"
#: A function's module may define ``warm()``: what Lambda's init phase does before the first event
#: (make clients, look things up); a local container calls it once its handler is loaded.
INIT_HOOK = "warm"


def cold_start(handler: Handler) -> None:
    """Make the function forget per-container state, as a freshly started Lambda container would.

    Functions cache their :class:`~skyloom.core.config.Settings` for the container's lifetime, but
    one Python process may host several local stacks in turn (a test session, ``skyloom.connect()``
    twice), each on new ports. If the handler's module defines ``reset_settings()``, it is called
    when a stack starts; otherwise nothing happens.
    """
    _call_hook(handler, COLD_START_HOOK)


def init(handler: Handler) -> None:
    """Run the function's init hook (:data:`INIT_HOOK`), if its module defines one."""
    _call_hook(handler, INIT_HOOK)


def _call_hook(handler: Handler, name: str) -> None:
    module = sys.modules.get(getattr(handler, "__module__", "") or "")
    hook = getattr(module, name, None) if module is not None else None
    if callable(hook):
        hook()


def handler_name(ref: HandlerRef) -> str:
    """A readable name for logs."""
    if isinstance(ref, str):
        return ref
    return f"{getattr(ref, '__module__', '?')}:{getattr(ref, '__qualname__', repr(ref))}"
