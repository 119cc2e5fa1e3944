"""Request and response bodies of the REST API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from taskq_core.records import TaskStatus
from taskq_core.task import MIN_TIMEOUT_SECONDS

# RFC 3339's date-time (JSON Schema's `format: date-time`): Pydantic alone would also take a bare
# number (`0.5`) as seconds since 1970, which the schema does not allow.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError("should be an RFC 3339 date-time with a time zone, e.g. 2026-01-31T12:00:00Z")


def _in_utc(value: datetime) -> datetime:
    # PostgreSQL takes offsets up to 15:59 only; RFC 3339 allows 23:59.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range (years 1 to 9999 in UTC)") from None


# An instant a request gives (run_at, the bulk actions' created_before/after), in UTC.
GivenInstant = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]

RUN_AT_YEARS = (1900, 9000)  # a run_at outside these (in UTC) is a mistake, or an attack


def utc(moment: datetime) -> str:
    """Every instant the API answers: UTC, ISO 8601, `Z` (the fast path's too)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# An instant in an answer, written by `utc` whatever the database session's time zone.
Instant = Annotated[
    datetime,
    PlainSerializer(utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class TaskCreate(BaseModel):
    """The body of `POST /tasks/`."""

    model_config = ConfigDict(
        extra="forbid",
        # The schema says what _one_start_time checks: not both start times at once.
        json_schema_extra={
            "examples": [
                {"task_type": "FibonacciTask", "input_data": {"n": 10}},
                {
                    "task_type": "FibonacciTask",
                    "input_data": {"n": 90},
                    "priority": 5,
                    "max_attempts": 2,
                    "timeout_seconds": 30,
                    "delay_seconds": 5,
                },
            ],
            "not": {
                "required": ["run_at", "delay_seconds"],
                "properties": {"run_at": {"type": "string"}, "delay_seconds": {"type": "number"}},
            },
        },
    )

    task_type: str = Field(description="A registered task type, e.g. FibonacciTask.")
    input_data: dict[str, Any] = Field(
        default_factory=dict, description="Validated against the task type's input schema."
    )
    # Numbers strictly: `true` is not a priority, nor `false` a delay.
    priority: int | None = Field(
        default=None,
        ge=1,
        le=5,
        strict=True,
        description="1 (lowest) .. 5 (highest); default: the type's.",
    )
    max_attempts: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=100,
        description="Attempts before failing; default: the type's; at most its max_attempts.",
    )
    timeout_seconds: float | None = Field(
        default=None,
        strict=True,
        ge=MIN_TIMEOUT_SECONDS,
        le=7 * 24 * 3600,
        description="Stop an attempt after this long; at most the type's max_timeout_seconds.",
    )
    run_at: GivenInstant | None = Field(
        default=None, description="Not before this instant (ISO 8601 with a time zone)."
    )
    delay_seconds: float | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=365 * 24 * 3600,
        description="Not before this many seconds.",
    )

    @field_validator("run_at")
    @classmethod
    def _readable_instant(cls, value: datetime | None) -> datetime | None:
        # An offset can push a valid-looking instant past year 9999 or before year 1 in UTC:
        # PostgreSQL would store it and Python could never read the row back.
        if value is None:
            return None
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must fall within the years 1900 to 9000 in UTC") from None
        if not RUN_AT_YEARS[0] <= utc.year < RUN_AT_YEARS[1]:
            raise ValueError("must fall within the years 1900 to 9000 in UTC")
        return utc

    @model_validator(mode="after")
    def _one_start_time(self) -> TaskCreate:
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give run_at or delay_seconds, not both")
        return self


MAX_BATCH = 10_000  # tasks per POST /tasks/batch at most; TASKQ_MAX_BATCH_SIZE sets the limit


class TaskBatch(BaseModel):
    """The body of `POST /tasks/batch`: validated all together, created all or none."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"tasks": [{"task_type": "FibonacciTask", "input_data": {"n": n}} for n in (1, 2)]}
            ]
        },
    )

    tasks: list[TaskCreate] = Field(min_length=1, max_length=MAX_BATCH)


class TaskSummary(BaseModel):
    id: int
    task_type: str
    status: TaskStatus
    priority: int
    created_at: Instant


class TaskSummaries(BaseModel):
    tasks: list[TaskSummary]


class TaskError(BaseModel):
    type: str
    message: str
    traceback: str = ""


class Attempt(BaseModel):
    attempt: int
    outcome: str = Field(
        description="completed, failed, retry, timeout, lost, cancelled or handed_back"
    )
    worker_id: str | None
    started_at: Instant | None
    finished_at: Instant
    error: TaskError | None


class Progress(BaseModel):
    done: float = Field(description="How far the task has come, in its own unit.")
    total: float | None = Field(description="Of how much, when the task knows.")
    message: str | None
    at: Instant | None = Field(default=None, description="When the task reported it.")


class Artifact(BaseModel):
    name: str = Field(description="Download it from `GET /tasks/{id}/artifacts/{name}`.")
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="Hex digest of the bytes.")
    content_type: str
    created_at: Instant


class TaskDetail(TaskSummary):
    input_data: dict[str, Any]
    result: dict[str, Any] | None
    error: TaskError | None = Field(description="The last attempt's error, if it failed.")
    attempts: int = Field(description="Attempts started so far.")
    max_attempts: int
    timeout_seconds: float | None
    run_at: Instant = Field(description="Not before this instant (delays, retry back-off).")
    started_at: Instant | None
    finished_at: Instant | None
    worker_id: str | None
    cancel_requested_at: Instant | None
    progress: Progress | None = Field(
        default=None,
        description="The running attempt's last reported progress (kept when it ends; a new "
        "attempt starts without).",
    )


class TaskWithHistory(TaskDetail):
    history: list[Attempt] = Field(description="Every attempt, oldest first.")
    artifacts: list[Artifact] = Field(
        default_factory=list, description="Files the completed attempt published."
    )


class TaskListItem(TaskSummary):
    """A task in a listing: its state, none of its bodies (GET /tasks/{id} has them)."""

    attempts: int
    max_attempts: int
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None


class TaskPage(BaseModel):
    tasks: list[TaskListItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


class WorkerInfo(BaseModel):
    id: str
    queue: str
    hostname: str
    pid: int
    concurrency: int = Field(
        description="How many tasks it may run at once now: its async limit (which it adapts, "
        "within `--concurrency`) and one per runner process."
    )
    started_at: Instant
    last_beat_at: Instant
    running: list[int] = Field(description="Ids of the tasks it runs now.")


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


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
    limits: dict[str, Any] = Field(
        description="The most a request may ask for: max_attempts, max_timeout_seconds."
    )
    paused: bool = Field(default=False, description="Paused: none of its tasks start.")
    paused_at: datetime | None = None


class PluginFailureInfo(BaseModel):
    plugin: str
    entry_point: str
    error: str


class TaskTypes(BaseModel):
    task_types: list[TaskTypeInfo]
    errors: list[PluginFailureInfo]


class Readiness(BaseModel):
    status: str = Field(description="ready or unavailable")
    postgresql: str
    redis: str
