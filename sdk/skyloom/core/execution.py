"""The operations of one attempt, as the worker agent calls them, from the modules that own each.

An attempt goes: :func:`read_tasks` (its batch's items) -> :func:`take` or :func:`claim`
(:mod:`~skyloom.core.claims`) -> :func:`load_inputs` (:mod:`~skyloom.core.inputs`) -> run ->
:func:`commit` (:mod:`~skyloom.core.commits`) or :func:`fail` (:mod:`~skyloom.core.retries`); while
it runs, :func:`heartbeat`; on a drain, :func:`give_back`. The agent takes this module as its
operations (``fargate_worker.attempt.ExecutionOps``); its unit tests pass fakes of the same names.
"""

from __future__ import annotations

from skyloom.core.claims import claim, claimed, give_back, heartbeat, read_tasks, take
from skyloom.core.commits import Commit, commit, commit_many
from skyloom.core.inputs import load_inputs
from skyloom.core.retries import fail

__all__ = ["Commit", "claim", "claimed", "commit", "commit_many", "fail", "give_back", "heartbeat", "load_inputs",
           "read_tasks", "take"]
