"""taskq-export: the ExportTask task type (see README.md)."""

from __future__ import annotations

from collections.abc import Callable

from taskq_core import Task, hookimpl
from taskq_export.queries import ExportQuery, ExportQueryError
from taskq_export.task import ExportTask, build_task

__all__ = ["ExportQuery", "ExportQueryError", "ExportTask", "build_task", "register_task_types"]


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    register(build_task())
