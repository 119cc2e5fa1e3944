"""`/tasks`: submit a task, read one, list them, cancel one."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError

from taskq_core import enqueue
from taskq_core.api.auth import AUTH_RESPONSES, Principal, Scope, check_reader, require
from taskq_core.api.deps import Backends, BackendsDep
from taskq_core.api.schemas import (
    TaskBatch,
    TaskCreate,
    TaskPage,
    TaskSummaries,
    TaskSummary,
    TaskWithHistory,
)
from taskq_core.errors import InvalidTaskError, TaskNotFoundError
from taskq_core.records import NewTask, TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=AUTH_RESPONSES)

Reader = Annotated[Principal, require(Scope.READ)]
# Submit keys read the tasks they submitted (to follow them), nothing else.
ReaderOrSubmitter = Annotated[Principal, require(Scope.READ, Scope.SUBMIT)]
Submitter = Annotated[Principal, require(Scope.SUBMIT)]
Admin = Annotated[Principal, require(Scope.ADMIN)]

MAX_PAGE = 1000
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1)]
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
    )


def _invalid(errors: list[dict[str, Any]], *prefix: object) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *prefix, *e["loc"])} for e in errors])


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
        "created_at": row["created_at"].isoformat(),
    }
    return Response(json.dumps(body), status_code, media_type="application/json")


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskSummary,
    responses={
        200: {"description": "A replay of an earlier request with the same Idempotency-Key"},
        409: {"description": "The Idempotency-Key was used for a different request"},
        413: {"description": "Body over 1 MiB"},
        422: {"description": "Unknown task type or invalid input"},
        503: {"description": "PostgreSQL or Redis unavailable; nothing was created"},
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
    responses={
        413: {"description": "Body over 1 MiB"},
        422: {"description": "Some task is invalid (`loc` names its index); nothing was created"},
        503: {"description": "PostgreSQL or Redis unavailable; nothing was created"},
    },
)
async def create_tasks(
    body: TaskBatch, backends: BackendsDep, principal: Submitter
) -> dict[str, Any]:
    """Create up to 1,000 tasks at once, all or none: one INSERT, one pipelined push."""
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


@router.get("/", response_model=TaskPage)
async def list_tasks(
    backends: BackendsDep,
    principal: Reader,
    status: Annotated[TaskStatus | None, Query()] = None,
    task_type: Annotated[str | None, Query()] = None,
    priority: Annotated[int | None, Query(ge=1, le=5)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")] = None,
) -> dict[str, Any]:
    """Tasks newest first; follow `next_cursor` for older ones."""
    rows = await backends.storage.list_tasks(
        status=status,
        task_type=task_type,
        priority=priority,
        before_id=int(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return {"tasks": [for_reader(row, principal) for row in rows], "next_cursor": next_cursor}


@router.get(
    "/{task_id}", response_model=TaskWithHistory, responses={404: {"description": "No such task"}}
)
async def get_task(
    task_id: TaskId, backends: BackendsDep, principal: ReaderOrSubmitter
) -> dict[str, Any]:
    """A task with every attempt; `error.traceback` only for admin keys."""
    row = await backends.storage.get(task_id)
    if row is None:
        raise TaskNotFoundError(f"task {task_id} not found")
    check_reader(principal, row["submitted_by"])
    return for_reader(row, principal)


@router.post(
    "/{task_id}/cancel",
    response_model=TaskWithHistory,
    responses={
        200: {"description": "Cancelled: it was pending and will never run"},
        202: {"description": "It is running: its worker was asked to stop it"},
        404: {"description": "No such task"},
        409: {"description": "It has already finished"},
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
    return task
