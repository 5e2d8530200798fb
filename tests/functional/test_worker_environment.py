"""Workers record their Python and cloudpickle; ``GET /environment`` returns them (moto, in-process)."""

from __future__ import annotations

import pytest

from skyloom.core import environment
from skyloom.core.config import Settings
from skyloom.core.models import SessionModel
from skyloom_server.fargate_worker.__main__ import record_environment
from tests.functional.conftest import ApiClient


def test_an_agent_records_its_versions_and_the_api_returns_them(api: ApiClient, aws_stack: Settings) -> None:
    # GIVEN no agent has started: nothing to report, and the default partition named
    r = api.call("GET", "/environment")
    assert r.status == 200, r.raw_body
    assert r.json == {"partitions": {}, "default_partition": aws_stack.default_partition}
    # WHEN an agent of the default partition starts
    record_environment(aws_stack.default_partition)
    # THEN its versions are there, as this interpreter's
    r = api.call("GET", "/environment")
    mine = environment.local_versions()
    [(name, seen)] = r.json["partitions"].items()
    assert name == aws_stack.default_partition
    assert (seen["python"], seen["cloudpickle"]) == (mine.python, mine.cloudpickle)


def test_the_newest_record_wins_and_sessions_never_see_it(api: ApiClient, aws_stack: Settings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    partition = aws_stack.default_partition
    monkeypatch.setattr(environment.clock, "now", lambda: 200.0)
    environment.record(partition, environment.Versions("3.12", "3.1.1"))
    monkeypatch.setattr(environment.clock, "now", lambda: 100.0)  # an older agent, late
    environment.record(partition, environment.Versions("3.10", "2.2.1"))
    assert environment.read([partition]) == {partition: (environment.Versions("3.12", "3.1.1"), 200.0)}
    # The record lives in the sessions table, invisible to the owner's listing and to ids.
    session = api.session()
    listed = api.call("GET", "/sessions").json["sessions"]
    assert [s["session_id"] for s in listed] == [session]
    assert SessionModel.count() == 2


def test_the_route_needs_an_identity(api: ApiClient) -> None:
    assert api.call("GET", "/environment", identity=api.ANONYMOUS).status in (401, 403)
