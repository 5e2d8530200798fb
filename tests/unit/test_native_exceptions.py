"""Native exceptions: ``future.result()`` raises the task's own exception type, and TaskFailed.

The worker records the module-qualified type and the args (when they are JSON scalars); the client
combines the type with the TaskFailed it raises anyway. These tests run the worker's recording
(run_task) and the client's rebuilding (failure_of, futures over the in-memory API).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

import skyloom
from skyloom.client import backend
from skyloom.client.failures import failure_of
from skyloom.client.lowlevel import Client
from skyloom.client.native import native_failure
from skyloom.core.protocol import ResultError, ResultInfo
from skyloom.runtime.executor import remote_error
from skyloom.runtime.outcome import MAX_ARGS_CHARS, portable_args
from tests.unit.test_sdk_fakeserver import FakeServer


class PricingError(Exception):
    """A user's exception with an attribute its __init__ sets from its args."""

    def __init__(self, trade: str, code: int) -> None:
        super().__init__(trade, code)
        self.trade = trade
        self.code = code


class Refuses(Exception):
    """A type Python refuses to combine with another base."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("final")


class Outer:
    class Inner(LookupError):
        """A nested exception type: its qualified name has a dot after the module."""


@skyloom.task(max_retries=0)
def fails_with_value_error(x: int) -> int:
    raise ValueError(f"bad trade {x}")


@skyloom.task(max_retries=0)
def fails_with_pricing_error() -> int:
    raise PricingError("T-42", 7)


@skyloom.task(max_retries=0)
def fails_with_an_object_arg() -> int:
    raise KeyError(object())


@skyloom.task
def plus_one(x: int) -> int:
    return x + 1


@pytest.fixture
def client() -> Iterator[Client]:
    c = Client(FakeServer())
    backend.set_fallback(c.default_session)
    yield c
    c.close()
    backend.set_fallback(None)


def aborted(type_name: str | None, args: list[Any] | None, *, status: str = "Error", owner: str = "t1") -> ResultInfo:
    error = ResultError(task_id="t1", handler="skyloom.call", status=status, attempts=2, type=type_name,
                        message="bad trade", traceback="Traceback ...\nValueError: bad trade\n", args=args)
    return ResultInfo(result_id="r1", session_id="s1", status="Aborted", owner_task_id=owner, created_at=0.0,
                      error=error)


# --------------------------------------------------------------------------- the worker records
def test_the_worker_records_the_qualified_type_and_scalar_args() -> None:
    err = remote_error(PricingError("T-1", 3))
    assert err.type == f"{__name__}.PricingError" and err.args == ["T-1", 3]
    assert remote_error(ValueError("x")).type == "ValueError"


def test_only_scalar_args_of_bounded_size_travel() -> None:
    assert portable_args(ValueError("a", 1, 2.5, True, None)) == ["a", 1, 2.5, True, None]
    assert portable_args(KeyError(object())) is None
    assert portable_args(ValueError(float("nan"))) is None
    assert portable_args(ValueError("x" * MAX_ARGS_CHARS)) is None
    # What travels is plain JSON, as the control plane stores it.
    assert json.loads(json.dumps(portable_args(ValueError("a", 1)))) == ["a", 1]


# ------------------------------------------------------------------------ the client rebuilds
def test_a_builtin_type_is_both_the_task_type_and_task_failed() -> None:
    err = failure_of(aborted("ValueError", ["bad trade"]))
    assert isinstance(err, ValueError) and isinstance(err, skyloom.TaskFailed)
    assert err.args == ("bad trade",) and err.task_id == "t1" and err.attempts == 2
    assert err.remote_type == "ValueError" and "Remote traceback" in str(err)


def test_the_status_class_is_kept() -> None:
    # GIVEN a result whose owner never ran because t1 (another task) failed
    err = failure_of(aborted("ValueError", ["bad"], owner="t2"))
    assert isinstance(err, skyloom.DependencyAborted) and isinstance(err, ValueError)
    assert isinstance(failure_of(aborted("TimeoutError", None, status="Timeout")), skyloom.TaskTimedOut)


def test_a_user_type_is_rebuilt_with_its_attributes() -> None:
    err = failure_of(aborted(f"{__name__}.PricingError", ["T-9", 5]))
    assert isinstance(err, PricingError) and err.trade == "T-9" and err.code == 5
    # Skyloom's attributes win over the type's: message is TaskFailed's contract.
    assert err.message.startswith("result r1")


def test_a_nested_type_is_found() -> None:
    assert isinstance(failure_of(aborted(f"{__name__}.Outer.Inner", None)), Outer.Inner)


def test_args_that_did_not_travel_are_the_remote_message() -> None:
    err = failure_of(aborted("KeyError", None))
    assert isinstance(err, KeyError) and err.args == ("bad trade",)


@pytest.mark.parametrize(
    "type_name",
    [
        "WorkerLost",  # a Skyloom-made type that names nothing
        "no_such_module_anywhere.Boom",
        f"{__name__}.Refuses",  # refuses subclasses
        "KeyboardInterrupt",  # not an Exception: never made into one
        "os.path",  # not a class
        "bad name!",
    ],
)
def test_otherwise_it_is_task_failed_as_before(type_name: str) -> None:
    err = failure_of(aborted(type_name, None))
    assert type(err) is skyloom.TaskFailed


def test_one_class_per_pair_and_pickling_keeps_everything() -> None:
    a = failure_of(aborted("ValueError", ["x"]))
    b = failure_of(aborted("ValueError", ["y"]))
    assert type(a) is type(b)
    back = pickle.loads(pickle.dumps(a))
    assert type(back) is type(a) and back.args == ("x",) and str(back) == str(a) and back.task_id == "t1"


def test_a_failure_already_of_the_type_is_returned_as_is() -> None:
    failure = skyloom.TaskFailed("m")
    assert native_failure(failure, "skyloom.errors.SkyloomError", None) is failure


# ----------------------------------------------------------------------- through the futures
def test_except_value_error_catches_a_tasks_value_error(client: Client) -> None:
    f = fails_with_value_error.submit(42)
    try:
        f.result()
    except ValueError as exc:
        caught: BaseException = exc
    assert isinstance(caught, skyloom.TaskFailed) and caught.args == ("bad trade 42",)
    assert "in fails_with_value_error" in str(caught)
    assert isinstance(f.exception(), ValueError)


def test_a_user_exception_through_a_dependency(client: Client) -> None:
    with pytest.raises(PricingError) as info:
        plus_one.submit(fails_with_pricing_error.submit()).result()
    assert isinstance(info.value, skyloom.DependencyAborted) and info.value.code == 7


def test_args_that_cannot_travel_still_give_the_type(client: Client) -> None:
    with pytest.raises(KeyError) as info:
        fails_with_an_object_arg.submit().result()
    assert isinstance(info.value, skyloom.TaskFailed) and "object object" in info.value.args[0]
