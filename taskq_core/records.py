"""The values every part of taskq passes around: task and attempt states, new tasks, claimed
tasks, how an attempt ended. Plain Python, so the worker needs no ORM to speak of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # final: permanent error or out of attempts
    RETRY = "retry"  # failed, another attempt is scheduled
    TIMEOUT = "timeout"
    LOST = "lost"  # the worker stopped heart-beating (killed, partitioned)
    CANCELLED = "cancelled"
    HANDED_BACK = "handed_back"  # the worker shut down first; does not count as an attempt


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
    # Who asked (api/auth.py's Principal.owner); scopes the idempotency key. '' from Python.
    submitted_by: str = ""


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
    # A completed attempt's artifacts, published in the same statement as the outcome.
    artifacts: tuple[dict[str, Any], ...] = ()
    # The attempt's last progress report not yet stored: it lands with the outcome.
    progress: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task id to push to Redis."""

    id: int
    priority: int


def runner_id(worker_id: str, pid: int) -> str:
    """The worker id a runner claims under: its worker's, and its own process id."""
    return f"{worker_id}/r{pid}"


def worker_of(holder: str) -> str:
    """The worker a claim's holder belongs to: itself, or the worker of a runner."""
    return holder.split("/", 1)[0]
