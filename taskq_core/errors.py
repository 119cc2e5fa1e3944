"""taskq's exceptions: one base class; each docstring is the default message."""

from __future__ import annotations

from typing import Any


class TaskqError(Exception):
    """A taskq error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(TaskqError):
    """taskq is not configured."""


class NotConfiguredError(ConfigurationError):
    """No PostgreSQL or Redis configured and no `taskq dev` running: set TASKQ_DATABASE_URL and
    TASKQ_REDIS_URL, or start `taskq dev` (or `make dev`) in another terminal."""


class PluginError(TaskqError):
    """A plugin could not be loaded."""


class DuplicateTaskTypeError(PluginError):
    """Two plugins register the same task type name."""


def _dotted(loc: object) -> str:
    return ".".join(map(str, loc)) if isinstance(loc, tuple | list) else str(loc)


class InvalidTaskError(TaskqError):
    """The task request does not validate."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{_dotted(e['loc'])}: {e['msg']}" for e in errors))
        self.errors = errors


class UnknownTaskTypeError(TaskqError):
    """No installed plugin provides this task type."""


class TaskNotFoundError(TaskqError):
    """No task with this id."""


class BackendUnavailableError(TaskqError):
    """PostgreSQL or Redis cannot be reached."""


class TaskStateError(TaskqError):
    """The task is not in a state that allows this."""


class IdempotencyConflictError(TaskqError):
    """This Idempotency-Key was already used for a different request."""


class ArtifactNotFoundError(TaskNotFoundError):
    """The task has no artifact of this name."""


class RangeNotSatisfiableError(TaskqError):
    """The byte range asked for is outside the file."""


class ScheduleNotFoundError(TaskqError):
    """No schedule with this name."""


class ScheduleExistsError(TaskqError):
    """A schedule with this name already exists."""
