"""`POST /tasks/retry` and `POST /tasks/cancel`: one action on every task the filters match."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, Field

from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import BackendsDep
from taskq_core.db.operations import CANCELLABLE, RETRYABLE, TaskFilter
from taskq_core.records import TaskStatus

# Both act on many tasks at once: admin keys only.
router = APIRouter(
    prefix="/tasks",
    tags=["tasks"],
    dependencies=[require(Scope.ADMIN)],
    responses=AUTH_RESPONSES,
)


def task_filter(
    status: Annotated[TaskStatus | None, Query()] = None,
    task_type: Annotated[str | None, Query()] = None,
    priority: Annotated[int | None, Query(ge=1, le=5)] = None,
    created_before: Annotated[AwareDatetime | None, Query()] = None,
    created_after: Annotated[AwareDatetime | None, Query()] = None,
) -> TaskFilter:
    """The listing's filters; every one given must match."""
    return TaskFilter(status, task_type, priority, created_before, created_after)


FilterDep = Annotated[TaskFilter, Depends(task_filter)]
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "A filter is invalid, or names a status this action skips"}
}


def _statuses(where: TaskFilter, allowed: tuple[TaskStatus, ...]) -> None:
    if where.status is not None and where.status not in allowed:
        names = " or ".join(allowed)
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "status"),
                    "msg": f"this action applies to {names} tasks only",
                    "input": where.status,
                }
            ]
        )


class Retried(BaseModel):
    retried: int = Field(description="Tasks put back to pending.")


class Cancelled(BaseModel):
    cancelled: int = Field(description="Pending tasks cancelled: they will never run.")
    stopping: int = Field(description="Running tasks whose workers were asked to stop them.")


@router.post("/retry", response_model=Retried, responses=INVALID)
async def retry_tasks(backends: BackendsDep, where: FilterDep) -> dict[str, Any]:
    """Run failed and cancelled tasks matching the filters again, each with as many attempts
    as it had before (its history is kept). Other statuses are left alone."""
    _statuses(where, RETRYABLE)

    async def push(rows: list[tuple[int, int]]) -> None:
        await backends.broker.push_many(rows)  # if lost, the sweeper pushes them

    return {"retried": await backends.storage.retry_many(where, push)}


@router.post("/cancel", response_model=Cancelled, responses=INVALID)
async def cancel_tasks(backends: BackendsDep, where: FilterDep) -> dict[str, Any]:
    """Cancel pending tasks matching the filters, and stop running ones (they end cancelled).
    Finished tasks are left alone."""
    _statuses(where, CANCELLABLE)
    stopping = 0

    async def notify(rows: list[tuple[int, int]]) -> None:
        nonlocal stopping
        running = [task_id for task_id, is_running in rows if is_running]
        stopping += len(running)
        for task_id in running:
            # The workers' heartbeat sees the flag too; this makes it immediate.
            await backends.broker.request_cancel(task_id)

    total = await backends.storage.cancel_many(where, notify)
    return {"cancelled": total - stopping, "stopping": stopping}
