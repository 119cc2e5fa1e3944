"""`/tasks`: submit a task, read one, list them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from fastapi.exceptions import RequestValidationError

from taskq_core import enqueue
from taskq_core.api.deps import BackendsDep
from taskq_core.api.schemas import TaskCreate, TaskDetail, TaskPage, TaskSummary
from taskq_core.errors import InvalidTaskError, TaskNotFoundError
from taskq_core.models import TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])

MAX_PAGE = 1000


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskSummary,
    responses={
        413: {"description": "Body over 1 MiB"},
        422: {"description": "Unknown task type or invalid input"},
        503: {"description": "PostgreSQL or Redis unavailable; nothing was created"},
    },
)
async def create_task(body: TaskCreate, backends: BackendsDep) -> dict[str, Any]:
    """Validate, record the task as pending, then hand its id to the workers."""
    try:
        new = enqueue.prepare(backends.registry, body.task_type, body.input_data, body.priority)
    except InvalidTaskError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors]  # type: ignore[misc]
        ) from None
    (row,) = await enqueue.submit(backends.storage, backends.broker, [new])
    return row


@router.get("/", response_model=TaskPage)
async def list_tasks(
    backends: BackendsDep,
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
    return {"tasks": rows, "next_cursor": next_cursor}


@router.get(
    "/{task_id}", response_model=TaskDetail, responses={404: {"description": "No such task"}}
)
async def get_task(
    task_id: Annotated[int, Path(ge=1, le=2**63 - 1)], backends: BackendsDep
) -> dict[str, Any]:
    row = await backends.storage.get(task_id)
    if row is None:
        raise TaskNotFoundError(f"task {task_id} not found")
    return row
