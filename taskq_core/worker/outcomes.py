"""What an attempt's end means for its task: completed, retried after a back-off, or failed."""

from __future__ import annotations

import random
import traceback

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


def timeout_error(seconds: float | None) -> dict[str, str]:
    return {
        "type": TIMEOUT_ERROR,
        "message": f"task exceeded its timeout of {seconds:g}s and was stopped",
        "traceback": "",
    }


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


def _text(make: object) -> str:
    """str() of something that may itself raise, without the NUL PostgreSQL refuses in text."""
    try:
        text = str(make)
    except Exception:
        text = f"<{type(make).__qualname__} that cannot be shown>"
    return text.replace("\x00", "\\x00")


def broken(exc: BaseException) -> Finish:
    """The worker itself could not run the attempt or make sense of its end: no retry would do
    better, so the task fails now, saying why, instead of staying `running` for ever."""
    try:
        trace = "".join(traceback.format_exception(exc))
    except Exception:
        trace = ""
    error = {
        "type": "WorkerError",
        "message": f"the worker could not run this task: {type(exc).__qualname__}: {_text(exc)}",
        "traceback": trace.replace("\x00", "\\x00"),
        "permanent": True,
    }
    return Finish(TaskStatus.FAILED, AttemptOutcome.FAILED, error=error)


def refused(finish: Finish, exc: BaseException) -> Finish:
    """PostgreSQL refused to store this outcome (its result or error holds what it cannot take,
    a NUL character for one): the same values would be refused on every attempt, so it fails."""
    what = "result" if finish.result is not None else "error"
    error = {
        "type": "OutcomeRefusedError",
        "message": f"PostgreSQL refused this attempt's {what} ({finish.outcome}): {_text(exc)}",
        "traceback": "",
        "permanent": True,
    }
    return Finish(TaskStatus.FAILED, AttemptOutcome.FAILED, error=error)
