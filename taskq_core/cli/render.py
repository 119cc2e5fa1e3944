"""Terminal output of the command line: tables of tasks and plugins."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from taskq_core.plugins import Registry

STATUS_STYLES = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def _short(value: Any, width: int = 40) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def task_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    table = Table(title=f"last {len(rows)} task(s)", title_justify="left")
    for column in ("id", "type", "status", "prio", "tries", "created", "input", "result / error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row["status"]
        outcome = row["result"] if row["error"] is None else row["error"].get("message")
        table.add_row(
            str(row["id"]),
            row["task_type"],
            f"[{STATUS_STYLES.get(status, '')}]{status}[/]",
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
            task_type.plugin.name,
            task_type.plugin.version or "",
            task_type.name,
            "async" if task_type.is_async else "sync",
            task_type.cls.description,
        )
    console.print(table if registry.types else "[yellow]no task types installed[/]")
    for failure in registry.failures:
        console.print(
            f"[red]failed to load[/] {failure.plugin} ({failure.entry_point}): {failure.error}"
        )
