"""taskq's Python client: `TaskQClient` (blocking) and `AsyncTaskQClient` (asyncio) for the REST
API, typed answers and typed errors. Depends on httpx and pydantic only."""

from __future__ import annotations

from taskq_client.aio import AsyncTaskQClient
from taskq_client.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    TaskQError,
    UnauthorizedError,
    UnavailableError,
    WaitTimeoutError,
)
from taskq_client.models import (
    Attempt,
    Task,
    TaskError,
    TaskListItem,
    TaskRequest,
    TaskSummary,
    TaskType,
)
from taskq_client.sync import TaskQClient

__all__ = [
    "AsyncTaskQClient",
    "Attempt",
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "Task",
    "TaskError",
    "TaskListItem",
    "TaskQClient",
    "TaskQError",
    "TaskRequest",
    "TaskSummary",
    "TaskType",
    "UnauthorizedError",
    "UnavailableError",
    "WaitTimeoutError",
]
