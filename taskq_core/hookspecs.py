"""The hooks a taskq plugin may implement."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT_NAME = "taskq"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_task_types(register: Callable[[type], None]) -> None:
    """Call `register(TaskSubclass)` once for each task type the plugin provides."""


@hookspec
def register_schedules(register: Callable[..., None]) -> None:
    """Call `register(name, cron, task_type, input_data, *, timezone="UTC", priority=None,
    catch_up="once")` once for each periodic task the plugin declares."""
