"""Running one task: validate its input, call `run`, validate its output, describe any error."""

from __future__ import annotations

import math
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from taskq_core.inputs import size_problem
from taskq_core.plugins import Registry, TaskType
from taskq_core.records import ClaimedTask
from taskq_core.redaction import redact
from taskq_core.task import (
    DEFAULT_BACKOFF_MAX,
    PermanentError,
    Reporter,
    Retry,
    Task,
    TaskContext,
)

# What a task's outcome may put in its row: a result is read whole by every GET of its task, and
# an error's text by every reader. (What PostgreSQL refuses outright, a NUL character, the
# recorder turns into the task's OutcomeRefusedError.)
MAX_RESULT_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 4096
MAX_TRACEBACK_CHARS = 32 * 1024


class UnstorableResultError(PermanentError):
    """The task's result is too large to store."""


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt of a task, as the worker hands it to what runs it (JSON-able via `asdict`)."""

    task_id: int
    task_type: str
    input_data: dict[str, Any]
    attempt: int
    max_attempts: int
    priority: int
    worker_id: str

    @classmethod
    def of(cls, task: ClaimedTask, worker_id: str) -> Job:
        """The job of `task`'s attempt, run for `worker_id`."""
        return cls(
            task_id=task.id,
            task_type=task.task_type,
            input_data=task.input_data,
            attempt=task.attempt,
            max_attempts=task.max_attempts,
            priority=task.priority,
            worker_id=worker_id,
        )

    def context(self, reporter: Reporter | None = None) -> TaskContext:
        if reporter is None:
            return TaskContext(
                task_id=self.task_id,
                task_type=self.task_type,
                attempt=self.attempt,
                max_attempts=self.max_attempts,
                priority=self.priority,
                worker_id=self.worker_id,
            )
        return TaskContext(
            task_id=self.task_id,
            task_type=self.task_type,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            priority=self.priority,
            worker_id=self.worker_id,
            reporter=reporter,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: the JSON result, or an error (type, message, traceback, and the
    plugin's wishes: `retry_after` seconds or `permanent`)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    # What a completed attempt publishes: {"name", "content_type", "size", "sha256", "key"} each.
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The JSON stored in `tasks.error`: type, message, traceback, and what the plugin asked for.

    URL passwords and API keys in them are masked: a driver's error often quotes its DSN, and
    whoever may read the task would see it. A long traceback keeps its end."""
    message = redact(str(exc) or type(exc).__qualname__)
    trace = redact("".join(traceback.format_exception(exc)))
    if len(trace) > MAX_TRACEBACK_CHARS:  # the end says where it failed: keep that
        trace = "…" + trace[-MAX_TRACEBACK_CHARS:]
    error: dict[str, Any] = {
        "type": type(exc).__qualname__,
        "message": message[:MAX_MESSAGE_CHARS],
        "traceback": trace,
    }
    if isinstance(exc, Retry):
        error["retry_after"] = exc.after if math.isfinite(exc.after) else DEFAULT_BACKOFF_MAX
    elif isinstance(exc, PermanentError):
        error["permanent"] = True
    return error


def input_error(exc: ValidationError) -> dict[str, Any]:
    """An input its task type's model rejects: the same input fails every attempt, so permanent."""
    return {**describe_error(exc), "permanent": True}


def unknown_type_error(registry: Registry, name: str) -> dict[str, Any]:
    """The error of a task whose type no loaded plugin provides (another worker may have it)."""
    message = (
        f"this worker has no plugin providing task type {name!r} "
        f"(it knows: {registry.known_names()}); install the plugin on every worker"
    )
    return {"type": "UnknownTaskTypeError", "message": message, "traceback": ""}


def to_output(task_type: TaskType, value: Any) -> dict[str, Any]:
    """Validate what `run` returned against the task type's Output and make it JSON."""
    output_model = task_type.cls.Output
    if isinstance(value, BaseModel) and not isinstance(value, output_model):
        value = value.model_dump()
    result: dict[str, Any] = output_model.model_validate(value).model_dump(mode="json")
    too_large = size_problem(result, ("result",), MAX_RESULT_BYTES)
    if too_large is not None:
        raise UnstorableResultError(f"result {too_large['msg']}")
    return result


def run_sync(
    task_type: TaskType, instance: Task, job: Job, reporter: Reporter | None = None
) -> Outcome:
    """Run a sync task type's `run` in this thread; every exception becomes the outcome's error."""
    try:
        data = task_type.parse_input(job.input_data)
    except ValidationError as exc:
        return Outcome(error=input_error(exc))
    try:
        return Outcome(result=to_output(task_type, instance.run(data, job.context(reporter))))
    except Exception as exc:
        return Outcome(error=describe_error(exc))


async def run_async(
    task_type: TaskType, instance: Task, job: Job, reporter: Reporter | None = None
) -> Outcome:
    """Await an async task type's `run`; exceptions become the error, cancellation propagates."""
    try:
        data = task_type.parse_input(job.input_data)
    except ValidationError as exc:
        return Outcome(error=input_error(exc))
    try:
        value = await cast(Awaitable[Any], instance.run(data, job.context(reporter)))
        return Outcome(result=to_output(task_type, value))
    except Exception as exc:  # CancelledError is a BaseException: it goes on up, as it must
        return Outcome(error=describe_error(exc))


class Instances:
    """One instance per task type, made on first use, so a plugin may keep clients between runs."""

    def __init__(self) -> None:
        self._made: dict[str, Task] = {}

    def get(self, task_type: TaskType) -> Task:
        """The task type's instance; whatever its constructor raises goes to the caller."""
        instance = self._made.get(task_type.name)
        if instance is None:
            # A failed constructor is not remembered: the next task tries again.
            instance = self._made[task_type.name] = task_type.cls()
        return instance

    def run_sync(self, task_type: TaskType, job: Job, reporter: Reporter | None = None) -> Outcome:
        """`run_sync` with this type's instance; a constructor's exception is the task's error."""
        try:
            instance = self.get(task_type)
        except Exception as exc:
            return Outcome(error=describe_error(exc))
        return run_sync(task_type, instance, job, reporter)

    async def run_async(
        self, task_type: TaskType, job: Job, reporter: Reporter | None = None
    ) -> Outcome:
        """`run_async` with this type's instance; a constructor's exception is the task's error."""
        try:
            instance = self.get(task_type)
        except Exception as exc:
            return Outcome(error=describe_error(exc))
        return await run_async(task_type, instance, job, reporter)
