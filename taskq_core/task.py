"""The plugin author's contract: the `Task` base class and the `TaskContext` each run receives."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar, Protocol

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


class Reporter(Protocol):
    """What a context reports to: the worker gives each attempt one (the plugin never sees it)."""

    def progress(self, done: float, total: float | None, message: str | None) -> None: ...

    def artifact(self, name: str, content_type: str) -> BinaryIO: ...


class _Unreported:
    """The reporter of a context made outside a worker (a plugin's own tests): progress goes
    nowhere; an artifact has nowhere to go."""

    def progress(self, done: float, total: float | None, message: str | None) -> None:
        return None

    def artifact(self, name: str, content_type: str) -> BinaryIO:
        raise RuntimeError("this TaskContext has no artifact store (it runs outside a worker)")


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a running task knows about itself; `task_id` and `attempt` make idempotency possible."""

    task_id: int
    task_type: str
    attempt: int
    max_attempts: int
    priority: int
    worker_id: str
    reporter: Reporter = field(default_factory=_Unreported, repr=False, compare=False)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the task has come (`done` of `total`, in any unit); call it as often
        as you like: the worker keeps only the latest and stores a few per second."""
        self.reporter.progress(done, total, message)

    def artifact(self, name: str, content_type: str = "application/octet-stream") -> BinaryIO:
        """A binary writer for a file the task produces: `with ctx.artifact("r.csv", "text/csv")
        as f: f.write(...)`. Listed on the task and downloadable once the task completes; an
        attempt that fails publishes none of its artifacts."""
        return self.reporter.artifact(name, content_type)


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
