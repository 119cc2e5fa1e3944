"""Terminal output of the command line: tables of tasks and plugins.

Every value that comes from a task or a plugin is data, never markup: a subject of `[/x]` would
crash rich, and `[link=...]` would plant a terminal hyperlink. Such values go through `Text`
(taken literally); only our own fixed strings use markup."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from taskq_core.plugins import Registry

STATUS_STYLES = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def _short(value: Any, width: int = 40) -> Text:
    if value is None:
        return Text("")
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return Text(text if len(text) <= width else text[: width - 1] + "…")


def task_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    table = Table(title=f"last {len(rows)} task(s)", title_justify="left")
    for column in ("id", "type", "status", "prio", "tries", "created", "input", "result / error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row["status"]
        outcome = row["result"] if row["error"] is None else row["error"].get("message")
        table.add_row(
            str(row["id"]),
            Text(row["task_type"]),
            Text(status, style=STATUS_STYLES.get(status, "")),
            str(row["priority"]),
            f"{row['attempts']}/{row['max_attempts']}",
            row["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            _short(row["input_data"]),
            _short(outcome),
        )
    (console or Console()).print(table)


def plugin_table(registry: Registry, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="plugins", title_justify="left")
    for column in ("plugin", "version", "task type", "kind", "description"):
        table.add_column(column)
    for task_type in registry:
        table.add_row(
            Text(task_type.plugin.name),
            Text(task_type.plugin.version or ""),
            Text(task_type.name),
            "async" if task_type.is_async else "sync",
            Text(task_type.cls.description),
        )
    console.print(table if registry.types else "[yellow]no task types installed[/]")
    for failure in registry.failures:
        console.print(
            f"[red]failed to load[/] {escape(failure.plugin)} ({escape(failure.entry_point)}): "
            f"{escape(failure.error)}"
        )
