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

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pynamodb.attributes import Attribute
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


def _move(attribute: Attribute[str], kind: str, allowed: frozenset[StrEnum], source: Sources,
          target: StrEnum) -> Move:
    chosen = allowed if source is None else frozenset([source] if isinstance(source, StrEnum) else source)
    illegal = sorted(s.value for s in chosen - allowed)
    if illegal or not chosen:
        raise IllegalTransition(f"the {kind} state table has no edge {illegal or '(none)'} -> {target.value}")
    return Move(attribute.set(target.value), _is(attribute, chosen))


def _is(attribute: Attribute[str], states: frozenset[StrEnum]) -> Condition:
    if len(states) == 1:
        (only,) = states
        one: Condition = attribute == only.value
        return one
    return attribute.is_in(*sorted(s.value for s in states))


def task_move(source: TaskStatus | Iterable[TaskStatus] | None, target: TaskStatus) -> Move:
    """A task from ``source`` (None: any state the table lets reach ``target``) to ``target``."""
    return _move(TaskModel.status, "task", frozenset(task_sources(target)), source, target)


def result_move(source: ResultStatus | Iterable[ResultStatus] | None, target: ResultStatus) -> Move:
    """A result from ``source`` (None: any state the table lets reach ``target``) to ``target``."""
    return _move(ResultModel.status, "result", frozenset(result_sources(target)), source, target)


def session_move(source: SessionStatus | Iterable[SessionStatus] | None, target: SessionStatus) -> Move:
    """A session from ``source`` (None: any state the table lets reach ``target``) to ``target``."""
    return _move(SessionModel.status, "session", frozenset(session_sources(target)), source, target)


def task_in(*states: TaskStatus) -> Condition:
    """The task is in one of ``states``, for a write that does not change its status."""
    return _is(TaskModel.status, frozenset(states))


def result_in(*states: ResultStatus) -> Condition:
    """The result is in one of ``states``, for a write that does not change its status."""
    return _is(ResultModel.status, frozenset(states))


def session_in(*states: SessionStatus) -> Condition:
    """The session is in one of ``states``, for a write (or a check) that does not change it."""
    return _is(SessionModel.status, frozenset(states))
