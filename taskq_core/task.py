"""The plugin author's contract: the `Task` base class and the `TaskContext` each run receives."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

DEFAULT_PRIORITY = 3
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_BASE = 1.0  # seconds: the first retry waits up to this long
DEFAULT_BACKOFF_MAX = 300.0  # seconds: no retry waits longer than this
# What a request may ask for: a timeout below this kills and re-forks runners for nothing.
MIN_TIMEOUT_SECONDS = 0.5
DEFAULT_MAX_ATTEMPTS_CAP = 25
DEFAULT_MAX_TIMEOUT_SECONDS = 24 * 3600.0


class Retry(Exception):
    """Raise from `run` to try again after `after` seconds (counts as an attempt)."""

    def __init__(self, after: float, reason: str = "") -> None:
        super().__init__(reason or f"retry requested in {after:g}s")
        self.after = max(0.0, float(after))


class PermanentError(Exception):
    """Raise (or subclass) from `run` for a failure that retrying cannot fix: the task fails now."""


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a running task knows about itself; `task_id` and `attempt` make idempotency possible."""

    task_id: int
    task_type: str
    attempt: int
    max_attempts: int
    priority: int
    worker_id: str


class Task:
    """Base class of every task type; subclass it and register the subclass from a plugin hook."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Input: ClassVar[type[BaseModel]]
    Output: ClassVar[type[BaseModel]]

    # Defaults a request may override.
    priority: ClassVar[int] = DEFAULT_PRIORITY
    max_attempts: ClassVar[int] = DEFAULT_MAX_ATTEMPTS
    timeout_seconds: ClassVar[float | None] = None
    # The most a request may ask for (422 beyond): caps on retries and on how long one runs.
    max_attempts_cap: ClassVar[int] = DEFAULT_MAX_ATTEMPTS_CAP
    max_timeout_seconds: ClassVar[float] = DEFAULT_MAX_TIMEOUT_SECONDS
    # Exponential back-off with full jitter between attempts.
    retry_backoff_base: ClassVar[float] = DEFAULT_BACKOFF_BASE
    retry_backoff_max: ClassVar[float] = DEFAULT_BACKOFF_MAX

    def run(self, data: Any, ctx: TaskContext) -> BaseModel | dict[str, Any] | Awaitable[Any]:
        """Do the work; return an `Output` (or a dict it validates); may be `async def`."""
        raise NotImplementedError
