"""The plugin author's contract: the `Task` base class and the `TaskContext` each run receives."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

DEFAULT_PRIORITY = 3
DEFAULT_MAX_ATTEMPTS = 3


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

    def run(self, data: Any, ctx: TaskContext) -> BaseModel | dict[str, Any] | Awaitable[Any]:
        """Do the work; return an `Output` (or a dict it validates); may be `async def`."""
        raise NotImplementedError
