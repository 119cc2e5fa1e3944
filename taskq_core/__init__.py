"""taskq: a plugin-based distributed task queue (PostgreSQL for records, Redis for dispatch)."""

from taskq_core.hookspecs import hookimpl
from taskq_core.task import Task, TaskContext

__all__ = ["Task", "TaskContext", "hookimpl"]
