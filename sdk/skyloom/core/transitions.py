"""Status changes as the state table allows them: where every conditional write gets its status.

A write that moves a task, a result or a session takes both halves of the move from here: the new
status (:attr:`Move.set`) and the condition that the item is still in a state the table of
:mod:`skyloom.core.states` lets it leave for that one (:attr:`Move.guard`). An edge the table lacks
cannot be built: asking for it raises :class:`IllegalTransition` on the first call, which any test
of that path hits; the functional suite also audits every status actually written against the table.

Writes that keep the status (a lease extension, a timer, a delegation) name it with the ``*_in``
conditions, so that every status condition of the code base is built in this module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from skyloom.core.models import ResultModel, SessionModel, TaskModel
from skyloom.core.states import (
    ResultStatus,
    SessionStatus,
    TaskStatus,
    result_sources,
    session_sources,
    task_sources,
)


class IllegalTransition(ValueError):
    """Code asked for a status change the state table does not have: a bug, never bad input."""


@dataclass(frozen=True)
class Move:
    """One status change: the update action that sets the new status, and the condition that the
    item is in one of the states it may come from."""

    set: Action
    guard: Condition


#: Where a move may come from: one state, several, or (None) every state the table allows.
Sources = StrEnum | Iterable[StrEnum] | None

#: Each kind of item: its model and the table's sources of a target state.
_TABLES: dict[str, tuple[type[TaskModel] | type[ResultModel] | type[SessionModel], Callable[[Any], frozenset[Any]]]] = {
    "task": (TaskModel, task_sources),
    "result": (ResultModel, result_sources),
    "session": (SessionModel, session_sources),
}


def _chosen(source: Sources) -> frozenset[StrEnum] | None:
    if source is None:
        return None
    return frozenset([source] if isinstance(source, StrEnum) else source)


@functools.cache
def _move(kind: str, source: frozenset[StrEnum] | None, target: StrEnum) -> Move:
    """Built once per edge and shared: pynamodb's actions and conditions are immutable expression
    trees (``&`` makes a new one), and every write of a commit or a queueing asks for one."""
    model, sources_of = _TABLES[kind]
    allowed = frozenset(sources_of(target))
    chosen = allowed if source is None else source
    illegal = sorted(s.value for s in chosen - allowed)
    if illegal or not chosen:
        raise IllegalTransition(f"the {kind} state table has no edge {illegal or '(none)'} -> {target.value}")
    return Move(model.status.set(target.value), _in(kind, chosen))


@functools.cache
def _in(kind: str, states: frozenset[StrEnum]) -> Condition:
    status = _TABLES[kind][0].status
    if len(states) == 1:
        (only,) = states
        one: Condition = status == only.value
        return one
    return status.is_in(*sorted(s.value for s in states))


def task_move(source: TaskStatus | Iterable[TaskStatus] | None, target: TaskStatus) -> Move:
    """A task from ``source`` (None: any state the table lets reach ``target``) to ``target``."""
    return _move("task", _chosen(source), target)


def result_move(source: ResultStatus | Iterable[ResultStatus] | None, target: ResultStatus) -> Move:
    """A result from ``source`` (None: any state the table lets reach ``target``) to ``target``."""
    return _move("result", _chosen(source), target)


def session_move(source: SessionStatus | Iterable[SessionStatus] | None, target: SessionStatus) -> Move:
    """A session from ``source`` (None: any state the table lets reach ``target``) to ``target``."""
    return _move("session", _chosen(source), target)


def task_in(*states: TaskStatus) -> Condition:
    """The task is in one of ``states``, for a write that does not change its status."""
    return _in("task", frozenset(states))


def result_in(*states: ResultStatus) -> Condition:
    """The result is in one of ``states``, for a write that does not change its status."""
    return _in("result", frozenset(states))


def session_in(*states: SessionStatus) -> Condition:
    """The session is in one of ``states``, for a write (or a check) that does not change it."""
    return _in("session", frozenset(states))
