"""What waiting for and reading N results costs on a local stack: the client's HTTP requests by
route, and the DynamoDB calls of the submit function (the API) while it serves them.

Three ways of reading, each on N zero-work tasks of its own session:

- ``in turn, after``: every task has completed first (the wait is then only a read), and the
  client runs ``[f.result() for f in futures]``;
- ``in turn, running``: the same, started as soon as the tasks are submitted;
- ``gather, running``: ``skyloom.gather(futures)``, where the SDK has it.

Usage (the same script measures any version of the SDK on its ``PYTHONPATH``)::

    PYTHONPATH=sdk:. python benchmarks/wait_cost.py 1000

Counts come from ``SKYLOOM_COUNT_API_CALLS`` dumps of every process of the stack; only the submit
containers' DynamoDB calls are kept (workers, resolve and the sweeper do the same work whatever the
client does).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

COUNT_DIR = Path(tempfile.mkdtemp(prefix="skyloom-wait-cost-"))
os.environ["SKYLOOM_COUNT_API_CALLS"] = str(COUNT_DIR)  # before skyloom.core.aws is imported anywhere

import skyloom  # noqa: E402
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack  # noqa: E402

DUMP_SETTLE_SECONDS = 3.0


@skyloom.task
def zero(i: int) -> int:
    return i


class CountingTransport:
    """The client's transport, counting requests by route (ids replaced by ``{}``)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.routes: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        parts = ["{}" if len(p) == 32 else p for p in path.split("?")[0].split("/")]
        self.routes[f"{method} {'/'.join(parts)}"] += 1
        return self.inner.request(method, path, body, timeout=timeout)

    def get_url(self, url: str) -> bytes:
        self.routes["GET presigned S3 URL"] += 1
        data: bytes = self.inner.get_url(url)
        return data


def submit_ddb_calls() -> Counter[str]:
    """DynamoDB calls so far of the submit containers (the API), from their dumps."""
    total: Counter[str] = Counter()
    for dump in COUNT_DIR.glob("calls-*.json"):
        body = json.loads(dump.read_text())
        if any("containers" in str(a) for a in body.get("argv", [])):
            total.update(body["calls"].get("dynamodb", {}))
    return total


def wait_all_completed(client: skyloom.Client, session_id: str, n: int) -> None:
    """Until every result of the session is Completed, without the SDK's waits (listings only)."""
    while sum(1 for _ in client.iter_results(session_id, status="Completed")) < n:
        time.sleep(1.0)


def measure(client: skyloom.Client, transport: CountingTransport, n: int, how: str) -> dict[str, Any]:
    with client.session() as s:
        futures = [zero.submit(i) for i in range(n)]
    if how.endswith("after"):
        wait_all_completed(client, s.session_id, n)
    time.sleep(DUMP_SETTLE_SECONDS)
    calls_before, routes_before = submit_ddb_calls(), Counter(transport.routes)
    start = time.monotonic()
    values = skyloom.gather(futures) if how.startswith("gather") else [f.result() for f in futures]
    seconds = time.monotonic() - start
    assert values == list(range(n))
    time.sleep(DUMP_SETTLE_SECONDS)
    requests = transport.routes - routes_before
    calls = submit_ddb_calls() - calls_before
    return {
        "how": how,
        "results": n,
        "client_requests": sum(requests.values()),
        "by_route": dict(requests),
        "api_dynamodb_calls": dict(calls),
        "api_dynamodb_total": sum(calls.values()),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ways = ["in turn, after", "in turn, running"] + (["gather, running"] if hasattr(skyloom, "gather") else [])
    with LocalStack(workers=2) as stack:
        client = skyloom.connect(stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))
        transport = CountingTransport(client._t)
        client._t = transport  # type: ignore[assignment]
        try:
            for how in ways:
                print(json.dumps(measure(client, transport, n, how)), flush=True)
        finally:
            client.close()


if __name__ == "__main__":
    main()
