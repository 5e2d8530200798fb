"""REST bodies of the read-side API: listings with filters and pagination, and the events feed.

Kept apart from :mod:`skyloom.core.protocol` (the write-side contract) so that the read side can grow
without touching the models every other route depends on. Same rules: one definition serves the
server's validation, the OpenAPI document and the SDK's parsing.

Pagination tokens and event cursors are opaque strings: clients pass back what they were given and
never build one, so the server may change what is inside.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from skyloom.core import limits
from skyloom.core.protocol import ResultInfo, SessionInfo, TaskInfo

#: Items per page unless the caller asks for fewer; and the most it may ask for (skyloom.core.limits).
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = limits.PAGE_SIZE.value
DEFAULT_EVENTS = 500
MAX_EVENTS = limits.EVENTS_PER_PAGE.value
#: How long a change waits before the events cursor may pass it (GSI propagation, clock skew of
#: writers); younger changes come aside as ``recent`` (:mod:`skyloom.core.events`).
SETTLE_SECONDS = 1.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionsPage(_Body):
    """The caller's sessions, newest first; ``next`` is absent on the last page."""

    sessions: list[SessionInfo]
    next: str | None = None


class TasksPage(_Body):
    """A page of a session's tasks; filtered pages may hold fewer than ``limit`` items yet have a
    ``next`` (the filter ran on a bounded read)."""

    tasks: list[TaskInfo]
    next: str | None = None


class ResultsPage(_Body):
    """A page of a session's results; see :class:`TasksPage` about short pages."""

    results: list[ResultInfo]
    next: str | None = None


class Event(_Body):
    """One object reaching a state: a task (with its handler and partition) or a result.

    An event is the object's *latest* state as of ``at``, not a journal entry: a task that went
    Submitted then Processing between two reads shows up once, as Processing.
    """

    kind: Literal["task", "result"]
    id: str
    status: str
    at: float = Field(description="When the object reached this state (epoch seconds, writer's clock).")
    handler: str | None = None
    label: str | None = Field(default=None, description="For a task: what it runs, for people (see TaskSpec).")
    partition: str | None = None
    owner_task_id: str | None = Field(default=None, description="For a result: the task that produces it.")


class EventsPage(_Body):
    """State changes after a cursor, oldest first.

    Pass ``cursor`` back as ``after`` to continue; when ``more`` is false the feed is drained up to
    the settle horizon (events younger than about a second are held back until the indexes they are
    read from have caught up, so that no change is skipped).
    """

    events: list[Event]
    cursor: str
    more: bool = False
    recent: list[Event] = Field(
        default_factory=list,
        description="Changes younger than the settle horizon, given early to readers that act at once "
        "(a client waiting for results). The cursor does not cover them: each comes again in `events` "
        "once settled, possibly in a newer state.",
    )
