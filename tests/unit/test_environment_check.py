"""The client checks, once, that the workers can load the functions it pickles."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import skyloom
from skyloom.client import backend
from skyloom.client.environment import EnvironmentCheck, client_versions
from skyloom.client.lowlevel import Client
from skyloom.client.specs import TaskRequest
from skyloom.core.protocol import EnvironmentInfo, ResultSpec, WorkerVersions
from tests.unit.test_sdk_fakeserver import FakeServer


@skyloom.task
def double(x: int) -> int:
    return 2 * x


def info(**partitions: tuple[str, str]) -> EnvironmentInfo:
    return EnvironmentInfo(
        partitions={
            n: WorkerVersions(python=py, cloudpickle=cp, recorded_at=1.0) for n, (py, cp) in partitions.items()
        },
        default_partition="default",
    )


class Reads:
    """A fetch that counts its calls."""

    def __init__(self, answer: EnvironmentInfo | Exception) -> None:
        self.answer, self.calls = answer, 0

    def __call__(self) -> EnvironmentInfo:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


# ------------------------------------------------------------------------------------- the check
def test_same_versions_pass_and_the_workers_are_read_once() -> None:
    reads = Reads(info(default=("3.11", "3.1.1"), gpu=("3.11", "3.1.1")))
    check = EnvironmentCheck(reads, local=("3.11", "3.1.1"))
    for _ in range(3):
        check.check([None, "gpu"])
    assert reads.calls == 1


@pytest.mark.parametrize("workers", [("3.12", "3.1.1"), ("3.11", "3.0.0")])
def test_another_python_or_cloudpickle_is_refused_naming_both_and_the_fix(workers: tuple[str, str]) -> None:
    check = EnvironmentCheck(Reads(info(default=workers)), local=("3.11", "3.1.1"))
    with pytest.raises(skyloom.EnvironmentMismatch) as caught:
        check.check([None])
    err = caught.value
    assert err.field == "partition" and err.details["partition"] == "default"
    assert err.details["workers"] == {"python": workers[0], "cloudpickle": workers[1]}
    assert err.details["client"] == {"python": "3.11", "cloudpickle": "3.1.1"}
    text = str(err)
    assert f"Python {workers[0]} with cloudpickle {workers[1]}" in text and "Python 3.11 with cloudpickle 3.1.1" in text
    assert f"pip install cloudpickle=={workers[1]}" in text and "worker image" in text


def test_only_the_partitions_used_are_checked() -> None:
    # GIVEN a GPU partition on another image, unused, and one where no agent ever started
    check = EnvironmentCheck(Reads(info(default=("3.11", "3.1.1"), gpu=("3.12", "3.1.1"))), local=("3.11", "3.1.1"))
    check.check([None, "default", "never-started"])
    with pytest.raises(skyloom.EnvironmentMismatch, match="'gpu'"):
        check.check(["gpu"])


def test_an_api_without_the_route_is_not_checked() -> None:
    reads = Reads(skyloom.NotFound("no route"))
    check = EnvironmentCheck(reads, local=("3.11", "3.1.1"))
    check.check([None])
    check.check([None])
    assert reads.calls == 1


# ----------------------------------------------------------------------------- through the client
@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(server: FakeServer) -> Iterator[Client]:
    c = Client(server)
    backend.set_fallback(c.default_session)
    yield c
    c.close()
    backend.set_fallback(None)


def test_a_matching_stack_costs_one_request_per_client(client: Client, server: FakeServer) -> None:
    assert [double.submit(i).result() for i in range(3)] == [0, 2, 4]
    assert sum(1 for m, p, _ in server.calls if (m, p) == ("GET", "/environment")) == 1


def test_a_mismatch_stops_the_submission_before_anything_is_sent(client: Client, server: FakeServer) -> None:
    server.worker_versions = {"default": ("2.7", "0.5.6")}
    with pytest.raises(skyloom.EnvironmentMismatch, match=r"Python 2\.7"):
        double.submit(1).result(timeout=10)
    assert server.tasks == {}


def test_a_partition_option_is_checked_against_its_own_workers(client: Client, server: FakeServer) -> None:
    python, pickler = client_versions()
    server.worker_versions = {"default": (python, pickler), "gpu": (python, "0.0.1")}
    assert double.submit(2).result() == 4
    with pytest.raises(skyloom.EnvironmentMismatch, match="'gpu'"):
        double.options(partition="gpu").submit(2).result(timeout=10)


def test_installed_handlers_are_not_checked(client: Client, server: FakeServer) -> None:
    server.worker_versions = {"default": ("2.7", "0.5.6")}
    with client.session() as s:
        (out,) = client.create_results(s.session_id, [ResultSpec(name="out")])
        client.submit_tasks(s.session_id, [TaskRequest("echo", expected_outputs=[out.result_id], payload=b"x")])
    assert not [p for _, p, _ in server.calls if p == "/environment"]


def test_the_sessions_default_partition_is_checked(client: Client, server: FakeServer) -> None:
    python, pickler = client_versions()
    server.worker_versions = {"default": (python, pickler), "gpu": (python, "0.0.1")}
    with client.session(partition="gpu"), pytest.raises(skyloom.EnvironmentMismatch, match="'gpu'"):
        double.submit(1).result(timeout=10)
