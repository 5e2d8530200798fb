"""The WSGI application the embedded emulator serves: moto's domain dispatcher, plus two local fixes.

Gunicorn imports this module in its single worker (``skyloom.local.moto_app:app``). moto keeps all
state in that process's memory, which is why :mod:`skyloom.local.emulator` never runs more than one
worker.

The two fixes are about running for hours rather than for one test:

* moto stores every DynamoDB Streams shard iterator it ever hands out, and a stream consumer asks for
  a new one on every poll (20 a second when idle). Only the most recent ones can still be in use, so
  the store is trimmed to the newest :data:`MAX_SHARD_ITERATORS`.
* moto holds nothing durable, so draining in-flight requests at shutdown protects nothing, while
  gunicorn's gthread worker sometimes outlives its graceful timeout on SIGQUIT/SIGTERM. The worker
  exits at once on those signals instead (gunicorn installs its handlers before loading this module).
* moto's DynamoDB is not thread-safe: ``TransactWriteItems`` deep-copies every table it touches and,
  when the transaction is cancelled, puts the copies back, silently undoing writes that other
  request threads made meanwhile (seen as results left Created under completed tasks). DynamoDB and
  DynamoDB Streams requests are therefore served one at a time (:func:`_serialize_dynamodb`); moto
  holds the GIL for nearly all of a request anyway, so this costs little throughput.
* If the process that started the emulator dies without stopping it (SIGKILL of a test run), nothing
  else would ever end it. A watchdog thread checks that parent (``SKYLOOM_LOCAL_PARENT_PID``) and
  asks the gunicorn master to shut down when it is gone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from skyloom.local.emulator import PARENT_PID_ENV

#: Shard iterators kept per streams backend; far more than one consumer can have in flight.
MAX_SHARD_ITERATORS = 2048

_original_get_records = DynamoDBStreamsBackend.get_records


def _get_records_bounded(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> dict[str, Any]:
    result = _original_get_records(self, iterator_arn, limit)
    excess = len(self.shard_iterators) - MAX_SHARD_ITERATORS
    if excess > 0:
        # dicts keep insertion order: the first keys are the oldest iterators.
        for stale in list(self.shard_iterators)[:excess]:
            self.shard_iterators.pop(stale, None)
    return result


DynamoDBStreamsBackend.get_records = _get_records_bounded  # type: ignore[method-assign]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(pid: int, period: float = 1.0) -> None:
    while _alive(pid):
        time.sleep(period)
    # The gunicorn master is our parent; SIGTERM makes it stop its worker (us) and exit.
    master = os.getppid()
    if master > 1:
        os.kill(master, signal.SIGTERM)


def _start_watchdog() -> None:
    raw = os.environ.get(PARENT_PID_ENV, "")
    if raw.isdigit():
        threading.Thread(target=_watch_parent, args=(int(raw),), name="parent-watchdog", daemon=True).start()


def _exit_now(signum: int, frame: object) -> None:
    os._exit(0)


def _install_fast_exit() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            signal.signal(signum, _exit_now)


_dynamodb_lock = threading.Lock()
WsgiApp = Any


def _serialize_dynamodb(inner: WsgiApp) -> WsgiApp:
    """Run DynamoDB (and Streams) requests one at a time, response body included."""

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB"):
            return inner(environ, start_response)
        with _dynamodb_lock:
            body = inner(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return serve


app = _serialize_dynamodb(DomainDispatcherApplication(create_backend_app))
_install_fast_exit()
_start_watchdog()
