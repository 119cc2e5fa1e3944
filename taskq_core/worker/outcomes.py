"""What an attempt's end means for its task: completed, retried after a back-off, or failed."""

from __future__ import annotations

import random

from taskq_core.records import AttemptOutcome, ClaimedTask, Finish, TaskStatus
from taskq_core.task import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, Task
from taskq_core.worker.execution import Outcome

TIMEOUT_ERROR = "TaskTimeoutError"


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return (rng or random).uniform(0, ceiling)


def decide(outcome: Outcome, task: ClaimedTask, task_class: type[Task] | None) -> Finish:
    """The task's next state after `outcome` of attempt `task.attempt`."""
    if outcome.error is None:
        return Finish(
            TaskStatus.COMPLETED,
            AttemptOutcome.COMPLETED,
            result=outcome.result,
            artifacts=tuple(outcome.artifacts),
        )
    error = outcome.error
    timed_out = error.get("type") == TIMEOUT_ERROR
    kind = AttemptOutcome.TIMEOUT if timed_out else AttemptOutcome.RETRY
    if error.get("permanent") or task.attempt >= task.max_attempts:
        final = AttemptOutcome.TIMEOUT if timed_out else AttemptOutcome.FAILED
        return Finish(TaskStatus.FAILED, final, error=error)
    if "retry_after" in error:
        delay = float(error["retry_after"])
    else:
        base = task_class.retry_backoff_base if task_class else DEFAULT_BACKOFF_BASE
        cap = task_class.retry_backoff_max if task_class else DEFAULT_BACKOFF_MAX
        delay = backoff(task.attempt, base, cap)
    return Finish(TaskStatus.PENDING, kind, error=error, retry_in=delay)


def cancelled(task: ClaimedTask) -> Finish:
    error = {"type": "TaskCancelledError", "message": "cancelled on request", "traceback": ""}
    return Finish(TaskStatus.CANCELLED, AttemptOutcome.CANCELLED, error=error)


def handed_back(task: ClaimedTask) -> Finish:
    error = {
        "type": "WorkerShutdownError",
        "message": "the worker shut down before the task finished; it will run again",
        "traceback": "",
    }
    return Finish(TaskStatus.PENDING, AttemptOutcome.HANDED_BACK, error=error)
