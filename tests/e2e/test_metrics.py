"""Measurements that outlive sessions (issue 15), on the local stack: a task records under a business
key, a task of a later session reads the last value at start, clients and the CLI read values and
history, a purged session keeps them, and another identity sees none of them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

import skyloom
from skyloom.cli import app
from skyloom.local import LocalStack
from skyloom.local.credentials import mint_identity

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
NAME = "seconds_per_path"


@skyloom.task
def measure(key: str, value: float) -> float | None:
    before = skyloom.metrics.latest(key, NAME)
    skyloom.metrics.record(key, NAME, value)
    return before


@skyloom.task(max_retries=0)
def unasked(key: str) -> float | None:
    return skyloom.metrics.latest(key, NAME)


def test_a_measurement_outlives_its_session_and_reaches_the_next_task(local_stack: Any,
                                                                        client: skyloom.Client) -> None:
    key = f"TRD-{uuid.uuid4().hex[:10]}"
    asks = measure.options(metrics=[(key, NAME)])
    # GIVEN a task that recorded under a trade id, in a session since closed and purged
    with client.session(name="metrics-1") as first:
        assert asks.submit(key, 1.5).result(timeout=TIMEOUT) is None  # nothing recorded before
    client.close_session(first.session_id)
    client.purge_session(first.session_id)

    # THEN the value is still there for clients
    last = client.metrics.latest(key, NAME)
    assert last is not None and last.value == 1.5 and last.session_id == first.session_id

    # WHEN a task of another session asks for it, THEN it reads it at start, and records the next one
    with client.session(name="metrics-2") as second:
        assert asks.submit(key, 2.5).result(timeout=TIMEOUT) == 1.5
    assert [v.value for v in client.metrics.history(key, NAME)] == [2.5, 1.5]  # newest first
    assert [v.value for v in client.metrics.history(key, NAME, limit=1)] == [2.5]
    shown = client.metrics.show(key)
    assert [(v.name, v.value, v.session_id) for v in shown.latest] == [(NAME, 2.5, second.session_id)]

    # AND the CLI shows them
    env = {"SKYLOOM_ENDPOINT": local_stack.endpoint}
    r = CliRunner().invoke(app, ["metrics", "show", key, "--json"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    body = json.loads("".join(line for line in r.stdout.splitlines(keepends=True) if '"service":"skyloom-' not in line))
    assert body["latest"][0]["value"] == 2.5
    r = CliRunner().invoke(app, ["metrics", "history", key, NAME], env=env, catch_exceptions=False)
    assert r.exit_code == 0 and "2.5" in r.stdout and "1.5" in r.stdout

    # AND a task that did not ask for a value is told how to ask, instead of getting None
    with client.session(name="metrics-3"):
        failed = unasked.submit(key)
    with pytest.raises(skyloom.TaskFailed, match="was not asked for"):
        failed.result(timeout=TIMEOUT)


def test_bad_keys_are_refused_and_identities_do_not_share_measurements(local_stack: Any,
                                                                       client: skyloom.Client) -> None:
    key = f"TRD-{uuid.uuid4().hex[:10]}"
    with client.session(name="metrics-iso"):
        assert measure.options(metrics=[(key, NAME)]).submit(key, 7.0).result(timeout=TIMEOUT) is None
    # A key the store cannot hold is refused before anything is sent, naming the field...
    with pytest.raises(skyloom.InvalidRequest) as bad:
        client.metrics.latest("TRD#1", NAME)
    assert bad.value.field == "key"
    with pytest.raises(skyloom.InvalidRequest):
        measure.options(metrics=[("has space", NAME)])
    if not isinstance(local_stack, LocalStack):
        pytest.skip("a second identity is minted on the local stack only")
    # ...and another identity reading the same key sees its own (empty) measurements, not these.
    other = skyloom.connect(local_stack.endpoint, credentials=mint_identity(local_stack.run_dir, "metrics-bob"))
    try:
        assert other.metrics.latest(key, NAME) is None
        assert other.metrics.show(key).latest == [] and other.metrics.history(key, NAME) == []
    finally:
        other.close()
    mine = client.metrics.latest(key, NAME)
    assert mine is not None and mine.value == 7.0
