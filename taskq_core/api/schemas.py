"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskq_core.models import TaskStatus


class TaskCreate(BaseModel):
    """The body of `POST /tasks/`."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(description="A registered task type, e.g. FibonacciTask.")
    input_data: dict[str, Any] = Field(
        default_factory=dict, description="Validated against the task type's input schema."
    )
    priority: int | None = Field(
        default=None, ge=1, le=5, description="1 (lowest) .. 5 (highest); default: the type's."
    )


class TaskSummary(BaseModel):
    id: int
    task_type: str
    status: TaskStatus
    priority: int
    created_at: datetime


class TaskError(BaseModel):
    type: str
    message: str
    traceback: str = ""


class TaskDetail(TaskSummary):
    input_data: dict[str, Any]
    result: dict[str, Any] | None
    error: TaskError | None
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None


class TaskPage(BaseModel):
    tasks: list[TaskDetail]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


class PluginRef(BaseModel):
    name: str
    version: str | None


class TaskTypeInfo(BaseModel):
    name: str
    description: str
    plugin: PluginRef
    is_async: bool
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    defaults: dict[str, Any]


class PluginFailureInfo(BaseModel):
    plugin: str
    entry_point: str
    error: str


class TaskTypes(BaseModel):
    task_types: list[TaskTypeInfo]
    errors: list[PluginFailureInfo]
