"""What the API answers, as Pydantic models; fields the server adds later are kept, not refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL = frozenset({"completed", "failed", "cancelled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskSummary(_Model):
    """What a submit answers."""

    id: int
    task_type: str
    status: str
    priority: int
    created_at: datetime


class TaskError(_Model):
    type: str
    message: str
    traceback: str = ""


class Attempt(_Model):
    attempt: int
    outcome: str
    worker_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime
    error: TaskError | None = None


class TaskListItem(TaskSummary):
    """A task as `list` yields it: its state, none of its bodies (`get` has them)."""

    attempts: int
    max_attempts: int
    run_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None

    @property
    def finished(self) -> bool:
        """Completed, failed or cancelled: it will not change unless retried."""
        return self.status in TERMINAL


class Progress(_Model):
    """A running task's last `ctx.progress`: `done` of `total` (in the task's own unit)."""

    done: float
    total: float | None = None
    message: str | None = None
    at: datetime | None = None


class Artifact(_Model):
    """A file a completed task published: `GET /tasks/{id}/artifacts/{name}`."""

    name: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime | None = None


class Task(TaskSummary):
    """A task as `get`, `wait`, `cancel` and `retry` return it."""

    input_data: dict[str, Any]
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    attempts: int
    max_attempts: int
    timeout_seconds: float | None = None
    run_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    cancel_requested_at: datetime | None = None
    history: list[Attempt] = Field(default_factory=list)
    progress: Progress | None = None
    artifacts: list[Artifact] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Completed, failed or cancelled: it will not change unless retried."""
        return self.status in TERMINAL


class PluginRef(_Model):
    name: str
    version: str | None = None


class TaskType(_Model):
    name: str
    description: str
    plugin: PluginRef
    is_async: bool
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    defaults: dict[str, Any]


class TaskRequest(_Model):
    """One task of `submit_many`."""

    model_config = ConfigDict(extra="forbid")

    task_type: str
    input_data: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = None
    max_attempts: int | None = None
    timeout_seconds: float | None = None
    run_at: datetime | None = None
    delay_seconds: float | None = None
