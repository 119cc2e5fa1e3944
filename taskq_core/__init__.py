"""taskq: a plugin-based distributed task queue (PostgreSQL for records, Redis for dispatch)."""

from taskq_core.hookspecs import hookimpl
from taskq_core.task import PermanentError, Retry, Task, TaskContext

__all__ = ["PermanentError", "Retry", "Task", "TaskContext", "hookimpl"]
