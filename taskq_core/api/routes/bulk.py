"""`POST /tasks/retry` and `POST /tasks/cancel`: one action on every task the filters match."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import BackendsDep
from taskq_core.api.responses import GUARDED, documented
from taskq_core.api.schemas import GivenInstant
from taskq_core.db.operations import TaskFilter

# Both act on many tasks at once: admin keys only.
router = APIRouter(
    prefix="/tasks",
    tags=["tasks"],
    dependencies=[require(Scope.ADMIN)],
    responses=AUTH_RESPONSES,
)


def task_filter(
    task_type: Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")] = None,
    priority: Annotated[int | None, Query(ge=1, le=5)] = None,
    created_before: Annotated[
        GivenInstant | None, Query(description="Created before this instant (RFC 3339).")
    ] = None,
    created_after: Annotated[
        GivenInstant | None, Query(description="Created after this instant (RFC 3339).")
    ] = None,
) -> TaskFilter:
    """The listing's filters but `status`, which each action declares (the statuses it takes)."""
    return TaskFilter(None, task_type, priority, created_before, created_after)


FilterDep = Annotated[TaskFilter, Depends(task_filter)]
# Only the statuses each action applies to (db.operations' RETRYABLE and CANCELLABLE), so the
# schema says which it takes: any other is a 422 naming `status`.
RetryableStatus = Literal["failed", "cancelled"]
CancellableStatus = Literal["pending", "running"]
RESPONSES = documented(
    *GUARDED, 413, 422, _422="A filter is invalid, or names a status this action does not take"
)


class Retried(BaseModel):
    retried: int = Field(description="Tasks put back to pending.")


class Cancelled(BaseModel):
    cancelled: int = Field(description="Pending tasks cancelled: they will never run.")
    stopping: int = Field(description="Running tasks whose workers were asked to stop them.")


@router.post("/retry", response_model=Retried, responses=RESPONSES)
async def retry_tasks(
    backends: BackendsDep,
    where: FilterDep,
    status: Annotated[RetryableStatus | None, Query()] = None,
) -> dict[str, Any]:
    """Run failed and cancelled tasks matching the filters again, each with as many attempts
    as it had before (its history is kept). Other statuses are left alone."""
    where = replace(where, status=status)

    async def push(rows: list[tuple[int, int]]) -> None:
        await backends.broker.push_many(rows)  # if lost, the sweeper pushes them

    return {"retried": await backends.storage.retry_many(where, push)}


@router.post("/cancel", response_model=Cancelled, responses=RESPONSES)
async def cancel_tasks(
    backends: BackendsDep,
    where: FilterDep,
    status: Annotated[CancellableStatus | None, Query()] = None,
) -> dict[str, Any]:
    """Cancel pending tasks matching the filters, and stop running ones (they end cancelled).
    Finished tasks are left alone."""
    where = replace(where, status=status)
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
