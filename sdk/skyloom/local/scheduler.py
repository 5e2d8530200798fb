"""An EventBridge ``rate(...)`` rule: call the dispatch function's sweep every ``interval`` seconds.

The sweeper repairs what crashes leave behind, so it must keep running whatever one sweep does: an
exception is logged and the next tick comes as planned, as a failed scheduled invocation on AWS does
not disable its rule.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from skyloom.local.credentials import LOCAL_ACCOUNT_ID
from skyloom.local.invoke import Handler, LambdaContext

logger = logging.getLogger(__name__)


def scheduled_event(*, region: str, rule_name: str, now: float | None = None) -> dict[str, Any]:
    """The event EventBridge sends to a function targeted by a scheduled rule."""
    moment = time.time() if now is None else now
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment)),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{LOCAL_ACCOUNT_ID}:rule/{rule_name}"],
        "detail": {},
    }


class Scheduler:
    """Invoke ``handler`` with a scheduled event every ``interval`` seconds on a daemon thread.

    Args:
        handler: The dispatch function's ``handler(event, context)``.
        interval: Seconds between the starts of two invocations (one at a time; a late one is not
            made up for).
        region: Region of the event and the function ARN.
        function_name: Name in the Lambda context.
        rule_name: Name of the rule in the event's ``resources``.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        interval: float,
        region: str,
        function_name: str = "skyloom-dispatch",
        rule_name: str = "skyloom-sweep",
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._handler = handler
        self._interval = interval
        self._region = region
        self._function_name = function_name
        self._rule_name = rule_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Completed invocations (failed ones included).
        self.invocations = 0
        self.failures = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="skyloom-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("scheduler did not stop within %.1f s (a sweep is still running)", timeout)
            self._thread = None

    def tick(self) -> Any:
        """Invoke the handler once now and return its response (None if it raised)."""
        event = scheduled_event(region=self._region, rule_name=self._rule_name)
        context = LambdaContext(function_name=self._function_name, region=self._region, timeout_seconds=300.0)
        try:
            return self._handler(event, context)
        except Exception:
            with self._lock:
                self.failures += 1
            logger.exception("scheduled invocation of %s failed", self._function_name)
            return None
        finally:
            with self._lock:
                self.invocations += 1

    def _run(self) -> None:
        next_at = time.monotonic() + self._interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.tick()
            next_at = max(next_at + self._interval, time.monotonic())
