"""Terminal output of `taskq plugins`: the installed task types, and plugins that failed.

Their names and descriptions are data, never markup: `print_table` shows them literally."""

from __future__ import annotations

import sys
from typing import Any

from taskq_core.cli.output import STATUS_STYLES, print_json, print_table
from taskq_core.plugins import Registry

__all__ = ["STATUS_STYLES", "plugin_table"]


def plugin_table(registry: Registry, *, as_json: bool = False) -> None:
    rows = [
        [
            task_type.plugin.name,
            task_type.plugin.version or "",
            task_type.name,
            "async" if task_type.is_async else "sync",
            task_type.cls.description,
        ]
        for task_type in registry
    ]
    failures = [
        {"plugin": f.plugin, "entry_point": f.entry_point, "error": f.error}
        for f in registry.failures
    ]
    if as_json:
        columns = ("plugin", "version", "task_type", "kind", "description")
        listing: dict[str, Any] = {
            "task_types": [dict(zip(columns, row, strict=True)) for row in rows],
            "failures": failures,
        }
        print_json(listing)
        return
    if rows:
        columns = ("plugin", "version", "task type", "kind", "description")
        print_table("plugins", columns, rows, {})
    else:
        print("no task types installed", file=sys.stderr)
    for failure in failures:
        print(
            f"failed to load {failure['plugin']} ({failure['entry_point']}): {failure['error']}",
            file=sys.stderr,
        )
