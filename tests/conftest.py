"""Fixtures and environment shared by every test.

``local_stack`` is the whole system for end-to-end tests: a :class:`~skyloom.local.LocalStack` with
two worker agents and fast timers, started once per session. Its AWS is moto unless
``SKYLOOM_LOCAL_AWS_ENDPOINT`` names another emulator (``make test-localstack`` points it at
LocalStack): every local stack the tests start then provisions its own uniquely named resources
there and runs the functions and workers here, against it. Set ``SKYLOOM_TEST_ENDPOINT`` to run the
same tests against a deployed Skyloom REST endpoint (a real account): the fixture then starts nothing
and only exposes that endpoint. Slow tests carry ``@pytest.mark.slow``; ``make test-fast``
deselects them with ``-m "not slow"``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from skyloom.core.config import Settings
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack
from skyloom.local.workers import WorkerPool

#: Points the suite at an already deployed Skyloom REST endpoint instead of a local stack.
TEST_ENDPOINT_ENV = "SKYLOOM_TEST_ENDPOINT"

#: Timers short enough for crash-recovery tests to finish in seconds.
FAST_SETTINGS = Settings(lease_seconds=5, redispatch_after_seconds=3, finalize_after_seconds=2, visibility_timeout=30)


def _isolate_from_real_aws() -> None:
    """Unless the suite targets a deployment, no test can reach a real AWS account: dummy
    credentials, a fixed region, no profile, and no X-Ray daemon expected."""
    if os.environ.get(TEST_ENDPOINT_ENV):
        return
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = LOCAL_ACCESS_KEY_ID
    os.environ["AWS_SECRET_ACCESS_KEY"] = LOCAL_SECRET_ACCESS_KEY
    os.environ.setdefault("AWS_REGION", "us-east-1")
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Skyloom")


_isolate_from_real_aws()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that use ``local_stack`` last (keeping their relative order).

    The stack lives for the rest of the session once started, and its in-process functions use the
    process-wide model binding and environment; tests that rebind them (``mock_aws`` fixtures) must
    all have finished before it starts.
    """
    items.sort(key=lambda item: "local_stack" in getattr(item, "fixturenames", ()))


@pytest.fixture(autouse=True)
def _no_embedded_stack_outlives_its_test() -> Iterator[None]:
    """A test whose ``skyloom.connect()`` started the process's embedded stack must not hand it to
    the next test (the stack is reused for the process's lifetime, by design)."""
    yield
    embedded = sys.modules.get("skyloom.local.embedded")
    if embedded is not None and embedded.embedded_stack() is not None:
        embedded.stop_embedded()


@dataclass(frozen=True)
class ExternalStack:
    """A deployment the suite does not control: an endpoint, and settings from the environment.

    ``workers`` is None: tests that kill workers must skip (``if stack.workers is None``).
    """

    endpoint: str
    settings: Settings
    workers: WorkerPool | None = None


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack | ExternalStack]:
    """The system under test: a started local stack (2 workers, fast timers), or ``SKYLOOM_TEST_ENDPOINT``."""
    endpoint = os.environ.get(TEST_ENDPOINT_ENV)
    if endpoint:
        yield ExternalStack(endpoint=endpoint.rstrip("/"), settings=Settings.from_env())
        return
    stack = LocalStack(
        workers=2,
        settings=FAST_SETTINGS,
        sweep_interval=1.0,
        run_dir=tmp_path_factory.mktemp("local-stack"),
    )
    with stack:
        yield stack
