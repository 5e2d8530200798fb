"""The REST API of Skyloom: one thin route per operation over :mod:`skyloom.core`.

Each route is typed with the protocol models of :mod:`skyloom.core.protocol`, so Powertools
validates the path and the body *before* the route runs and generates the OpenAPI document from
the same annotations the client SDK serializes with. A route then does exactly three things: take
the caller's identity (``Owner``) and the settings (``CurrentSettings``) as dependencies, call one
core function, and return its model. Every failure is an exception mapped to HTTP in ``errors.py``.

What the routes share with :mod:`.lifecycle_routes` (Powertools' logger, tracer and metrics, the
dependencies, the parameter types, the documented answers) is in :mod:`.shared`; ``handler.py`` only
wires the decorators.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.metrics import MetricUnit

from skyloom.core import environment, events, limits, queries, results, sessions, submission, tasklogs, tasks
from skyloom.core.checkpoints import task_checkpoints
from skyloom.core.cost import Prices, Pricing, pricing
from skyloom.core.protocol import (
    ID_PATTERN,
    MAX_HANDLER_LENGTH,
    MAX_LABEL_LENGTH,
    CheckpointInfo,
    CreateResultsRequest,
    CreateSessionRequest,
    EnvironmentInfo,
    IdsRequest,
    ResultData,
    ResultInfo,
    ResultsResponse,
    SessionInfo,
    SubmitTasksRequest,
    SubmitTasksResponse,
    TaskInfo,
    TaskLogs,
    TasksResponse,
    WaitRequest,
    WaitResponse,
    WorkerVersions,
)
from skyloom.core.protocol_queries import (
    DEFAULT_EVENTS,
    DEFAULT_PAGE_SIZE,
    MAX_EVENTS,
    MAX_PAGE_SIZE,
    EventsPage,
    ResultsPage,
    SessionsPage,
    TasksPage,
)
from skyloom.core.states import ResultStatus, SessionStatus, TaskStatus
from skyloom.errors import InvalidRequest, PayloadTooLarge
from skyloom_server.functions.submit import errors, lifecycle_routes, metrics_routes, openapi
from skyloom_server.functions.submit.identity import principal_of
from skyloom_server.functions.submit.shared import (
    CurrentSettings,
    Owner,
    ResultId,
    SessionId,
    TaskId,
    logger,
    metrics,
    responses,
)

#: Lambda refuses synchronous invocation payloads over 6 MB; the local stack has no such gate, so the
#: API enforces it itself, before parsing, to behave the same on a laptop as on AWS.
MAX_BODY_BYTES = limits.REQUEST_BODY_BYTES.value

#: A long-poll must answer before Lambda times out (and API Gateway's 29 s integration timeout).
WAIT_SAFETY_SECONDS = 2.0



# ------------------------------------------------------------------------------- request plumbing
def parse_json_body(text: str) -> Any:
    """Powertools' body deserializer: the size limit first, then strict JSON.

    Both failures are domain errors so that ``errors.py`` answers them like any other: 413 and 400,
    each naming ``body``.
    """
    size = len(text) if len(text) > MAX_BODY_BYTES else len(text.encode("utf-8"))
    if size > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"request body of {size} bytes exceeds the {MAX_BODY_BYTES}-byte limit; "
            "upload large data through presigned URLs (results with upload=true)",
            field="body",
            details={"limit": MAX_BODY_BYTES, "size": size},
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field="body",
        ) from exc




def log_request_keys(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Tag every log line of the request with its route, session (if any) and caller.

    Runs after validation, so ``session_id`` is a well-formed id. The keys are cleared at the next
    invocation by ``inject_lambda_context(clear_state=True)``.
    """
    request = app.request
    keys: dict[str, str] = {"route": f"{request.method} {request.route}"}
    session_id = request.path_parameters.get("session_id")
    if isinstance(session_id, str):
        keys["session_id"] = session_id
    caller = principal_of(app.current_event.raw_event)
    if caller is not None:
        keys["caller"] = caller
    logger.append_keys(**keys)
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    return next_middleware(app)


app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json_body)
app.use(middlewares=[log_request_keys])
errors.install(app, logger=logger, metrics=metrics)

# --------------------------------------------------------------------------------- documentation


# --------------------------------------------------------------------------------------- sessions
@app.post(
    "/sessions",
    status_code=201,
    operation_id="createSession",
    summary="Create a session owned by the caller",
    tags=["sessions"],
    responses=responses(201, body=True, session=False),
)
def create_session(req: CreateSessionRequest, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """Create a session; its default task options and partitions apply to every task in it."""
    info = sessions.create_session(settings, owner, req)
    metrics.add_metric(name="SessionsCreated", unit=MetricUnit.Count, value=1)
    return info


@app.get(
    "/sessions/<session_id>",
    operation_id="getSession",
    summary="Get a session",
    tags=["sessions"],
    responses=responses(200, body=False),
)
def get_session(session_id: SessionId, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """The session's status and defaults."""
    return sessions.get_session(settings, owner, session_id)


@app.post(
    "/sessions/<session_id>/close",
    operation_id="closeSession",
    summary="Close a session to new submissions",
    tags=["sessions"],
    responses=responses(200, body=False),
)
def close_session(session_id: SessionId, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """Close the session: running work finishes, new submissions are refused. Idempotent."""
    return sessions.close_session(settings, owner, session_id)


# ---------------------------------------------------------------------------------------- results
@app.post(
    "/sessions/<session_id>/results",
    status_code=201,
    operation_id="createResults",
    summary="Create results (inline data, upload URL, or awaiting a task)",
    tags=["results"],
    responses=responses(201, body=True),
)
def create_results(
    session_id: SessionId, req: CreateResultsRequest, owner: Owner, settings: CurrentSettings
) -> ResultsResponse:
    """Create results in one atomic request; see :class:`ResultSpec` for the three kinds."""
    created = results.create_results(settings, owner, session_id, req.results)
    metrics.add_metric(name="ResultsCreated", unit=MetricUnit.Count, value=len(created))
    return ResultsResponse(results=created)


@app.post(
    "/sessions/<session_id>/results/complete",
    operation_id="completeUploads",
    summary="Complete results uploaded to their presigned URLs",
    tags=["results"],
    responses=responses(200, body=True),
)
def complete_uploads(
    session_id: SessionId, req: IdsRequest, owner: Owner, settings: CurrentSettings
) -> ResultsResponse:
    """Mark uploaded results Completed once their objects exist, which releases dependent tasks."""
    return ResultsResponse(results=results.complete_uploads(settings, owner, session_id, req.ids))


@app.post(
    "/sessions/<session_id>/results/get",
    operation_id="getResults",
    summary="Get several results",
    tags=["results"],
    responses=responses(200, body=True),
)
def get_results(session_id: SessionId, req: IdsRequest, owner: Owner, settings: CurrentSettings) -> ResultsResponse:
    """Several results by id, in the order asked (a POST because the id list can be long)."""
    return ResultsResponse(results=results.get_results(settings, owner, session_id, req.ids))


@app.post(
    "/sessions/<session_id>/results/wait",
    operation_id="waitResults",
    summary="Wait (long-poll) until results are final, and read many values at once",
    tags=["results"],
    responses=responses(200, body=True),
)
def wait_results(session_id: SessionId, req: WaitRequest, owner: Owner, settings: CurrentSettings) -> WaitResponse:
    """Wait until all (or any, or all unless one fails) of the results are final, at most ``timeout``
    seconds; with ``values``, the answer carries the values of Completed results (and of the final
    ones among ``also``) inline or as presigned URLs, up to a byte budget.

    The timeout is cut to what this invocation has left, so a long-poll returns ``done: false``
    instead of being killed by a Lambda timeout the caller would see as a 5xx.
    """
    remaining = _remaining_seconds()
    if remaining is not None and req.timeout > remaining - WAIT_SAFETY_SECONDS:
        req = req.model_copy(update={"timeout": max(0.0, remaining - WAIT_SAFETY_SECONDS)})
    return results.wait_results(settings, owner, session_id, req)


@app.get(
    "/sessions/<session_id>/results/<result_id>",
    operation_id="getResult",
    summary="Get a result",
    tags=["results"],
    responses=responses(200, body=False),
)
def get_result(session_id: SessionId, result_id: ResultId, owner: Owner, settings: CurrentSettings) -> ResultInfo:
    """One result's status (and the failure that aborted it, if any)."""
    (info,) = results.get_results(settings, owner, session_id, [result_id])
    return info


@app.get(
    "/sessions/<session_id>/results/<result_id>/data",
    operation_id="readResult",
    summary="Read a completed result's value",
    tags=["results"],
    responses=responses(200, body=False),
)
def read_result(session_id: SessionId, result_id: ResultId, owner: Owner, settings: CurrentSettings) -> ResultData:
    """The value inline (base64) when small, else a presigned download URL."""
    return results.read_result(settings, owner, session_id, result_id)


# ------------------------------------------------------------------------------------------ tasks
@app.post(
    "/sessions/<session_id>/tasks",
    status_code=201,
    operation_id="submitTasks",
    summary="Submit tasks (and create the results they need)",
    tags=["tasks"],
    responses=responses(201, body=True),
)
def submit_tasks(
    session_id: SessionId, req: SubmitTasksRequest, owner: Owner, settings: CurrentSettings,
    answer: Annotated[Literal["full", "none"], Query(
        description="`none`: list no task, and only the results created with an upload URL (a client that "
                    "keeps its own ids needs nothing else back)")] = "full",
) -> SubmitTasksResponse:
    """Submit a batch of tasks atomically: either every task is created or none is."""
    response = submission.submit_tasks(settings, owner, session_id, req, answer=answer == "full")
    metrics.add_metric(name="TasksSubmitted", unit=MetricUnit.Count, value=len(req.tasks))
    return response


@app.post(
    "/sessions/<session_id>/tasks/get",
    operation_id="getTasks",
    summary="Get several tasks",
    tags=["tasks"],
    responses=responses(200, body=True),
)
def get_tasks(session_id: SessionId, req: IdsRequest, owner: Owner, settings: CurrentSettings) -> TasksResponse:
    """Several tasks by id, in the order asked."""
    return TasksResponse(tasks=tasks.get_tasks(settings, owner, session_id, req.ids))


@app.get(
    "/sessions/<session_id>/tasks/<task_id>",
    operation_id="getTask",
    summary="Get a task",
    tags=["tasks"],
    responses=responses(200, body=False),
)
def get_task(session_id: SessionId, task_id: TaskId, owner: Owner, settings: CurrentSettings) -> TaskInfo:
    """One task's status, attempts and error."""
    (info,) = tasks.get_tasks(settings, owner, session_id, [task_id])
    return info


AttemptNumber = Annotated[
    int | None,
    Query(ge=1, le=limits.MAX_RETRIES.value + 1,
          description="Only this attempt (1 is the first); without it, every ended attempt, oldest first."),
]


@app.get(
    "/sessions/<session_id>/tasks/<task_id>/logs",
    operation_id="getTaskLogs",
    summary="Read what a task's attempts printed",
    tags=["tasks"],
    responses=responses(200, body=False),
)
def get_task_logs(
    session_id: SessionId, task_id: TaskId, owner: Owner, settings: CurrentSettings, attempt: AttemptNumber = None
) -> TaskLogs:
    """The tail of each ended attempt's stdout and stderr (at most `task_log_bytes` each, the cut
    said); the last `task_log_attempts` attempts without `attempt`."""
    return tasklogs.task_logs(settings, owner, session_id, task_id, attempt)


@app.get(
    "/sessions/<session_id>/tasks/<task_id>/checkpoints",
    operation_id="getTaskCheckpoints",
    summary="Count a task's checkpoints",
    tags=["tasks"],
    responses=responses(200, body=False),
)
def get_task_checkpoints(session_id: SessionId, task_id: TaskId, owner: Owner) -> CheckpointInfo:
    """How many checkpoints the task's attempts took (`skyloom.checkpoint`), their sizes, the latest
    one (dropped once the task completed), and which attempt resumed from which."""
    return task_checkpoints(owner, session_id, task_id)


# ------------------------------------------------------------------------ listings and events
StatusFilter = Annotated[
    str | None,
    Query(max_length=limits.STATUS_FILTER_LENGTH.value,
          description="Comma-separated states to keep, e.g. `Error,Timeout` (any case)."),
]
CreatedAfter = Annotated[float | None, Query(description="Keep objects created after this epoch time (s).")]
CreatedBefore = Annotated[float | None, Query(description="Keep objects created before this epoch time (s).")]
PageLimit = Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (default 100).")]
PageToken = Annotated[
    str | None,
    Query(alias="next", max_length=limits.PAGE_TOKEN_LENGTH.value,
          description="The `next` token of the previous page."),
]


@app.get(
    "/sessions",
    operation_id="listSessions",
    summary="List the caller's sessions, newest first",
    tags=["sessions"],
    responses=responses(200, body=False, session=False),
)
def list_sessions(
    owner: Owner,
    settings: CurrentSettings,
    status: StatusFilter = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    limit: PageLimit = None,
    next_token: PageToken = None,
) -> SessionsPage:
    """One page of the caller's sessions (Deleted ones excluded); pass ``next`` for the following page."""
    filters = queries.Filters(
        statuses=queries.parse_statuses(status, SessionStatus),
        created_after=created_after,
        created_before=created_before,
    )
    return queries.list_sessions(owner, filters, queries.check_limit(limit, DEFAULT_PAGE_SIZE), next_token)


@app.get(
    "/sessions/<session_id>/tasks",
    operation_id="listTasks",
    summary="List a session's tasks with filters",
    tags=["tasks"],
    responses=responses(200, body=False),
)
def list_tasks(
    session_id: SessionId,
    owner: Owner,
    settings: CurrentSettings,
    status: StatusFilter = None,
    handler: Annotated[
        str | None,
        Query(max_length=max(MAX_HANDLER_LENGTH, MAX_LABEL_LENGTH),
              description="Keep tasks of this handler, or of this label (`module.qualname`)."),
    ] = None,
    partition: Annotated[
        str | None,
        Query(max_length=limits.PARTITION_NAME_LENGTH.value, description="Keep tasks of this partition."),
    ] = None,
    parent: Annotated[str | None, Query(pattern=ID_PATTERN, description="Keep the subtasks of this task.")] = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    limit: PageLimit = None,
    next_token: PageToken = None,
) -> TasksPage:
    """One page of the session's tasks in index order (by id); a filtered page may be short."""
    filters = queries.Filters(
        statuses=queries.parse_statuses(status, TaskStatus),
        handler=handler,
        partition=partition,
        parent=parent,
        created_after=created_after,
        created_before=created_before,
    )
    return queries.list_tasks(owner, session_id, filters, queries.check_limit(limit, DEFAULT_PAGE_SIZE), next_token)


@app.get(
    "/sessions/<session_id>/results",
    operation_id="listResults",
    summary="List a session's results with filters",
    tags=["results"],
    responses=responses(200, body=False),
)
def list_results(
    session_id: SessionId,
    owner: Owner,
    settings: CurrentSettings,
    status: StatusFilter = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    limit: PageLimit = None,
    next_token: PageToken = None,
) -> ResultsPage:
    """One page of the session's results in index order (by id); a filtered page may be short."""
    filters = queries.Filters(
        statuses=queries.parse_statuses(status, ResultStatus),
        created_after=created_after,
        created_before=created_before,
    )
    limit_ = queries.check_limit(limit, DEFAULT_PAGE_SIZE)
    return queries.list_results(owner, session_id, filters, limit_, next_token)


@app.get(
    "/sessions/<session_id>/events",
    operation_id="sessionEvents",
    summary="Tasks and results that changed state after a cursor",
    tags=["sessions"],
    responses=responses(200, body=False),
)
def session_events(
    session_id: SessionId,
    owner: Owner,
    settings: CurrentSettings,
    after: Annotated[
        str | None,
        Query(max_length=limits.PAGE_TOKEN_LENGTH.value,
              description="The previous answer's `cursor`; absent: from the start."),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_EVENTS, description="Events per answer (default 500).")] = None,
) -> EventsPage:
    """State changes oldest first, each the object's latest state; poll with the returned cursor."""
    return events.session_events(owner, session_id, after, queries.check_limit(limit, DEFAULT_EVENTS, MAX_EVENTS))


# ------------------------------------------------------------------------------------ environment
@app.get(
    "/environment",
    operation_id="workerEnvironment",
    summary="The Python and cloudpickle versions each partition's workers run",
    tags=["environment"],
    responses=responses(200, body=False, session=False),
)
def worker_environment(owner: Owner, settings: CurrentSettings) -> EnvironmentInfo:
    """What the last agent to start in each partition recorded; a client compares it with its own
    before shipping functions by value (one read per client)."""
    found = environment.read([p.name for p in settings.partitions])
    return EnvironmentInfo(
        partitions={
            name: WorkerVersions(python=v.python, cloudpickle=v.cloudpickle, recorded_at=at)
            for name, (v, at) in found.items()
        },
        default_partition=settings.default_partition,
    )


@app.get(
    "/pricing",
    operation_id="getPricing",
    summary="The prices this stack's cost estimates use, per partition and per AWS request",
    tags=["environment"],
    responses=responses(200, body=False, session=False),
)
def get_pricing(owner: Owner, settings: CurrentSettings) -> Pricing:
    """List prices overridden by the stack's ``skyloom:prices``; ``skyloom stats`` prices a session
    with them (see docs/cost.md)."""
    return pricing(settings.partitions, Prices.parse(settings.prices), settings.inline_max_bytes)


# ---------------------------------------------------------------------------------------- openapi
@app.get("/openapi.json", include_in_schema=False)
def openapi_document(owner: Owner) -> dict[str, Any]:
    """The contract, for tools that discover it from the endpoint; authenticated like the rest."""
    return openapi.document(app)


def _remaining_seconds() -> float | None:
    """Seconds left in this invocation, or None when the context cannot tell (tests, local)."""
    remaining_ms = getattr(app.lambda_context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return None
    try:
        return float(remaining_ms()) / 1000.0
    except (TypeError, ValueError):
        return None


# Session and task lifecycle routes, and the measurements API: their own routers, on the same
# resolver (validation, errors, OpenAPI).
app.include_router(lifecycle_routes.router)
app.include_router(metrics_routes.router)
