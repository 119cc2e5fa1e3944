"""The client's exceptions: one per kind of answer a caller handles differently."""

from __future__ import annotations

from typing import Any


class TaskQError(Exception):
    """The API refused the request or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class InvalidInputError(TaskQError, ValueError):
    """422: the request does not validate; `errors` lists each problem (`loc`, `msg`, `type`),
    e.g. `{"loc": ["body", "input_data", "n"], "msg": "...", "type": "greater_than_equal"}`."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, 422, errors)
        self.errors = errors


class NotFoundError(TaskQError, LookupError):
    """404: no such task."""


class UnauthorizedError(TaskQError):
    """401: no API key, or one the API does not know (set TASKQ_API_KEY or pass api_key)."""


class ForbiddenError(TaskQError):
    """403: the API key lacks the scope this request needs."""


class ConflictError(TaskQError):
    """409: the task is not in a state that allows this, or an Idempotency-Key was reused for
    another request."""


class UnavailableError(TaskQError):
    """The API, its PostgreSQL or its Redis was unavailable (503, 429 or no connection) and
    stayed so through every retry."""


class WaitTimeoutError(TaskQError, TimeoutError):
    """`wait()` ran out of time before the task finished; `task` is how it was last seen."""

    def __init__(self, message: str, task: Any) -> None:
        super().__init__(message)
        self.task = task
