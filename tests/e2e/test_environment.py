"""The workers' versions reach the client: recorded by real agents, read through the API."""

from __future__ import annotations

import time
from typing import Any

import pytest

import skyloom
from skyloom.client.environment import client_versions

pytestmark = pytest.mark.slow


@skyloom.task
def triple(x: int) -> int:
    return 3 * x


def test_agents_publish_their_versions_and_a_matching_client_submits(client: skyloom.Client, local_stack: Any) -> None:
    if local_stack.workers is None:
        pytest.skip("a deployment's workers may run another image: nothing to compare with here")
    # GIVEN the agents of the stack have started (each records its versions first thing)
    deadline = time.monotonic() + 60
    while True:
        answer = client._t.request("GET", "/environment")
        if answer["partitions"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    python, pickler = client_versions()
    default = answer["default_partition"]
    assert answer["partitions"][default]["python"] == python
    assert answer["partitions"][default]["cloudpickle"] == pickler
    # THEN this client (same interpreter) passes its check and runs a shipped function
    with client.session():
        assert triple.submit(5).result(timeout=120) == 15
