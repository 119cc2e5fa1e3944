"""`POST /tasks/retry` and `POST /tasks/cancel`: one action on every task the filters match."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
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
Everything = Annotated[
    bool,
    Query(
        description="Required to act on every task when no filter is given (a guard, not a filter)."
    ),
]


def _refuse_surprises(request: Request, where: TaskFilter, everything: bool) -> None:
    """A body is not read (the filters are query parameters), so one is refused rather than
    ignored; and no filter at all means every task only when `everything=true` says so."""
    errors = []
    if request.headers.get("content-length", "0") not in ("", "0") or request.headers.get(
        "transfer-encoding"
    ):
        errors.append(
            {
                "type": "unexpected_body",
                "loc": ("body",),
                "msg": "takes no body: the filters are query parameters",
                "input": None,
            }
        )
    given = (
        where.status,
        where.task_type,
        where.priority,
        where.created_before,
        where.created_after,
    )
    if not everything and all(value is None for value in given):
        errors.append(
            {
                "type": "missing",
                "loc": ("query",),
                "msg": "give at least one filter, or everything=true to act on every task",
                "input": None,
            }
        )
    if errors:
        raise RequestValidationError(errors)


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
    request: Request,
    backends: BackendsDep,
    where: FilterDep,
    status: Annotated[RetryableStatus | None, Query()] = None,
    everything: Everything = False,
) -> dict[str, Any]:
    """Run failed and cancelled tasks matching the filters again, each with as many attempts
    as it had before (its history is kept). Other statuses are left alone."""
    where = replace(where, status=status)
    _refuse_surprises(request, where, everything)

    async def push(rows: list[tuple[int, int]]) -> None:
        await backends.broker.push_many(rows)  # if lost, the sweeper pushes them

    return {"retried": await backends.storage.retry_many(where, push)}


@router.post("/cancel", response_model=Cancelled, responses=RESPONSES)
async def cancel_tasks(
    request: Request,
    backends: BackendsDep,
    where: FilterDep,
    status: Annotated[CancellableStatus | None, Query()] = None,
    everything: Everything = False,
) -> dict[str, Any]:
    """Cancel pending tasks matching the filters, and stop running ones (they end cancelled).
    Finished tasks are left alone."""
    where = replace(where, status=status)
    _refuse_surprises(request, where, everything)
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
