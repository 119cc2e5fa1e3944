"""`/tasks`: submit a task, read one (or wait for it to end, or follow it), list them, cancel one,
retry one."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from taskq_core import enqueue
from taskq_core.api import waiting
from taskq_core.api.auth import AUTH_RESPONSES, Principal, Scope, check_reader, require
from taskq_core.api.deps import Backends, BackendsDep, SettingsDep
from taskq_core.api.responses import GUARDED, WITH_BODY, documented
from taskq_core.api.schemas import (
    TaskBatch,
    TaskCreate,
    TaskPage,
    TaskSummaries,
    TaskSummary,
    TaskWithHistory,
    utc,
)
from taskq_core.broker import count_field
from taskq_core.errors import InvalidTaskError, TaskNotFoundError
from taskq_core.records import NewTask, TaskStatus

log = logging.getLogger("taskq.api")
router = APIRouter(prefix="/tasks", tags=["tasks"], responses=AUTH_RESPONSES)

Reader = Annotated[Principal, require(Scope.READ)]
# Submit keys read the tasks they submitted (to follow them), nothing else.
ReaderOrSubmitter = Annotated[Principal, require(Scope.READ, Scope.SUBMIT)]
Submitter = Annotated[Principal, require(Scope.SUBMIT)]
Admin = Annotated[Principal, require(Scope.ADMIN)]

MAX_PAGE = 10_000  # the most TASKQ_MAX_PAGE_SIZE may allow
MAX_ID = 2**63 - 1  # PostgreSQL's bigint
TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
# `{task_id:int}`: only digits reach the task routes, so /tasks/batch is never read as an id
# (GET /tasks/batch is a 405, not a 422 about an integer).
ONE = "/{task_id:int}"
MAX_WAIT = 60.0  # seconds a `GET /tasks/{id}?wait=` may hold its request
KEEPALIVE = 15.0  # seconds between comments on a quiet event stream, so proxies keep it open
# One event of `GET /tasks/{id}/events` (OpenAPI 3.1: a text/event-stream schema is one event's).
STATUS_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "status"},
        "id": {"enum": [s.value for s in TaskStatus], "description": "The task's status."},
        "data": {
            "type": "string",
            "description": "The task, as `GET /tasks/{id}` answers it.",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/TaskWithHistory"},
        },
    },
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Replaying a request with the same key returns the original task.",
    ),
]


def fingerprint(body: TaskCreate) -> str:
    """The same request, however its JSON was spelled, gives the same fingerprint."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def prepare(
    body: TaskCreate,
    backends: Backends,
    idempotency_key: str | None = None,
    submitted_by: str = "",
) -> NewTask:
    """Validate one request against its task type; InvalidTaskError lists what is wrong."""
    return enqueue.prepare(
        backends.registry,
        body.task_type,
        body.input_data,
        body.priority,
        max_attempts=body.max_attempts,
        timeout_seconds=body.timeout_seconds,
        run_at=body.run_at,
        delay_seconds=body.delay_seconds,
        idempotency_key=idempotency_key,
        idempotency_hash=fingerprint(body) if idempotency_key else None,
        submitted_by=submitted_by,
        limits=backends.limits,
    )


def _invalid(errors: list[dict[str, Any]], *prefix: object) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *prefix, *e["loc"])} for e in errors])


def _over(loc: tuple[str, ...], value: object, msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "limit", "loc": loc, "msg": msg, "input": value}])


def _without_traceback(error: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if error is None else {**error, "traceback": ""}


def for_reader(row: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """`row` as `principal` may see it: a traceback (paths, settings, hosts in frames) is for
    admin keys; others get the error's type and message."""
    if principal.is_admin:
        return row
    shown = {**row, "error": _without_traceback(row.get("error"))}
    if "history" in row:
        shown["history"] = [{**h, "error": _without_traceback(h["error"])} for h in row["history"]]
    return shown


def summary_response(row: dict[str, Any], status_code: int) -> Response:
    # The hot path: five known fields, serialised directly rather than through a model.
    body = {
        "id": row["id"],
        "task_type": row["task_type"],
        "status": row["status"],
        "priority": row["priority"],
        "created_at": utc(row["created_at"]),
    }
    return Response(json.dumps(body), status_code, media_type="application/json")


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskSummary,
    responses={
        200: {
            "model": TaskSummary,
            "description": "A replay of an earlier request with the same Idempotency-Key",
        },
        **documented(
            *GUARDED,
            *WITH_BODY,
            409,
            422,
            _409="The Idempotency-Key was used for a different request",
            _422="Unknown task type or invalid input (NUL characters, NaN, too deep or too large)",
        ),
    },
)
async def create_task(
    body: TaskCreate,
    backends: BackendsDep,
    principal: Submitter,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Validate, record the task as pending, then hand its id to the workers.

    (Requests that will succeed without an Idempotency-Key are served the same way, below
    FastAPI, by `api/fastpath.py`; this route answers the rest, and every error.)"""
    try:
        new = prepare(body, backends, idempotency_key, principal.owner)
    except InvalidTaskError as exc:
        raise _invalid(exc.errors) from None
    if idempotency_key is None:
        row = await backends.submitter.submit(new)
        return summary_response(row, status.HTTP_201_CREATED)
    row, created = await enqueue.submit_idempotent(backends.storage, backends.broker, new)
    return summary_response(row, status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@router.post(
    "/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskSummaries,
    responses=documented(
        *GUARDED,
        *WITH_BODY,
        422,
        _422="Some task is invalid (`loc` names its index), or too many; nothing was created",
    ),
)
async def create_tasks(
    body: TaskBatch, backends: BackendsDep, settings: SettingsDep, principal: Submitter
) -> dict[str, Any]:
    """Create up to TASKQ_MAX_BATCH_SIZE (1,000) tasks at once, all or none: one INSERT, one
    pipelined push."""
    if len(body.tasks) > settings.max_batch_size:
        raise _over(
            ("body", "tasks"),
            len(body.tasks),
            f"at most {settings.max_batch_size} tasks per batch (TASKQ_MAX_BATCH_SIZE)",
        )
    new: list[NewTask] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(body.tasks):
        try:
            new.append(prepare(item, backends, submitted_by=principal.owner))
        except InvalidTaskError as exc:
            errors.extend({**e, "loc": ("tasks", index, *e["loc"])} for e in exc.errors)
    if errors:
        raise _invalid(errors)
    return {"tasks": await enqueue.submit(backends.storage, backends.broker, new)}


@router.get("/", response_model=TaskPage, responses=documented(*GUARDED, 422))
async def list_tasks(
    backends: BackendsDep,
    settings: SettingsDep,
    principal: Reader,
    status: Annotated[TaskStatus | None, Query()] = None,
    task_type: Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")] = None,
    priority: Annotated[int | None, Query(ge=1, le=5)] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE, description="At most TASKQ_MAX_PAGE_SIZE (1,000).")
    ] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")] = None,
) -> dict[str, Any]:
    """Tasks newest first, as summaries (no input, result or error: `GET /tasks/{id}` has
    them); follow `next_cursor` for older ones."""
    if limit > settings.max_page_size:
        raise _over(
            ("query", "limit"),
            limit,
            f"at most {settings.max_page_size} tasks per page (TASKQ_MAX_PAGE_SIZE)",
        )
    if cursor is not None and int(cursor) > MAX_ID:
        raise _over(("query", "cursor"), cursor, "is not a cursor this API gave out")
    rows = await backends.storage.list_tasks(
        status=status,
        task_type=task_type,
        priority=priority,
        before_id=int(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    # Summaries carry no error, so nothing in them is for admin keys only.
    return {"tasks": rows, "next_cursor": next_cursor}


@router.get(ONE, response_model=TaskWithHistory, responses=documented(*GUARDED, 404, 422))
async def get_task(
    task_id: TaskId,
    backends: BackendsDep,
    principal: ReaderOrSubmitter,
    hub: waiting.HubDep,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_WAIT,
            description="Answer as soon as the task has finished (completed, failed or "
            "cancelled), or after this many seconds with the task as it is then.",
        ),
    ] = None,
) -> dict[str, Any]:
    """A task with every attempt; `error.traceback` only for admin keys."""
    if wait:
        # Who may read it is checked before waiting, not only after.
        first = await backends.storage.get(task_id)
        if first is None:
            raise TaskNotFoundError(f"task {task_id} not found")
        check_reader(principal, first["submitted_by"])
    row = await (
        waiting.wait_for_end(hub, task_id, wait) if wait else backends.storage.get(task_id)
    )
    if row is None:
        raise TaskNotFoundError(f"task {task_id} not found")
    check_reader(principal, row["submitted_by"])
    return for_reader(row, principal)


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: a `status` event with the task (as `GET "
            "/tasks/{id}` answers) now and at each status change, a `progress` event with it "
            "when only its progress changed (a few a second at most); the stream ends after a "
            "terminal status. Comment lines keep a quiet stream open.",
            "content": {"text/event-stream": {"schema": STATUS_EVENT}},
        },
        **documented(*GUARDED, 404, 422, _404="No such task"),
    },
)
async def task_events(
    task_id: TaskId, backends: BackendsDep, principal: ReaderOrSubmitter, hub: waiting.HubDep
) -> StreamingResponse:
    """Follow a task's status as it changes, pushed as it is committed."""
    first = await backends.storage.get(task_id)
    if first is None:
        raise TaskNotFoundError(f"task {task_id} not found")
    check_reader(principal, first["submitted_by"])

    async def stream() -> AsyncIterator[str]:
        status = None
        async for row in waiting.changes_of(hub, task_id, KEEPALIVE):
            if row is None:
                yield ": keepalive\n\n"
                continue
            shown = TaskWithHistory.model_validate(for_reader(row, principal))
            event = "progress" if row["status"] == status else "status"
            status = row["status"]
            yield f"event: {event}\nid: {status}\ndata: {shown.model_dump_json()}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    ONE + "/cancel",
    response_model=TaskWithHistory,
    responses={
        200: {"description": "Cancelled: it was pending and will never run"},
        202: {
            "model": TaskWithHistory,
            "description": "It is running: its worker was asked to stop it",
        },
        **documented(*GUARDED, 404, 409, 413, 422, _409="It has already finished"),
    },
)
async def cancel_task(
    task_id: TaskId, backends: BackendsDep, response: Response, principal: Admin
) -> dict[str, Any]:
    """Cancel a pending task, or ask the worker running it to stop it (it ends `cancelled`)."""
    task = await backends.storage.cancel(task_id)
    if task["status"] == TaskStatus.RUNNING:
        # The worker's heartbeat would see the flag too; this makes it immediate.
        await backends.broker.request_cancel(task_id)
        response.status_code = status.HTTP_202_ACCEPTED
    else:
        await _announce(backends, task, "cancelled")
    return task


@router.post(
    "/{task_id}/retry",
    response_model=TaskWithHistory,
    responses={
        200: {"description": "Pending again, with its attempts counted anew; history kept"},
        **documented(
            *GUARDED,
            404,
            409,
            422,
            _404="No such task",
            _409="It is pending, running or completed: only failed or cancelled",
            _503="PostgreSQL unavailable; nothing changed",
        ),
    },
)
async def retry_task(task_id: TaskId, backends: BackendsDep, principal: Admin) -> dict[str, Any]:
    """Run a failed or cancelled task again: it gets all its attempts back, and the earlier
    attempts stay in its history."""
    return await retry_and_dispatch(backends, task_id)


async def retry_and_dispatch(backends: Backends, task_id: int) -> dict[str, Any]:
    """The retry itself, for this route and the dashboard's button: make it pending, push its
    id, wake whoever waits on it. Raises TaskNotFoundError or TaskStateError."""
    task = await backends.storage.retry(task_id)
    try:
        await backends.broker.push(task_id, task["priority"])
    except RedisError as exc:
        # Committed as pending and marked dispatched: the sweeper's lost-dispatch repair pushes
        # it within a sweep interval, so the retry stands.
        log.warning("task %d retried but not pushed (%s); the sweeper will push it", task_id, exc)
    await _announce(backends, task, "retried")
    return task


async def _announce(backends: Backends, task: dict[str, Any], event: str) -> None:
    """Wake whoever waits on the task and count `event`; committed already, so a Redis failure
    only delays waiters to their deadline."""
    counts = {count_field(event, task["task_type"], task["priority"]): 1}
    try:
        await backends.broker.announce([(task["id"], task["status"])], counts)
    except RedisError as exc:
        log.debug("could not announce task %d %s (%s)", task["id"], task["status"], exc)
