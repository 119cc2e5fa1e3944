"""What the storage API takes and gives: new tasks, claimed tasks, and how an attempt ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskq_core.models import AttemptOutcome, TaskStatus


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated request to create a task."""

    task_type: str
    input_data: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_seconds: float | None = None
    run_at: datetime | None = None  # absolute start time; else now + delay_seconds
    delay_seconds: float = 0.0
    idempotency_key: str | None = None
    idempotency_hash: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task a worker now holds: the fields it needs to run and to fence its outcome."""

    id: int
    task_type: str
    input_data: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    timeout_seconds: float | None


@dataclass(frozen=True, slots=True)
class Finish:
    """How an attempt ended: the task's next status and the attempt record to keep."""

    status: TaskStatus  # pending (a retry or hand-back), completed, failed or cancelled
    outcome: AttemptOutcome
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    retry_in: float = 0.0  # seconds until the next attempt, when status is pending


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task id to push to Redis."""

    id: int
    priority: int
