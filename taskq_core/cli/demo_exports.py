"""The demo's exports: when taskq-export is installed, a few ExportTasks over the demo's own
database, so progress bars are seen moving beside the Fibonacci counts."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from taskq_core import artifacts, enqueue
from taskq_core.cli.render import STATUS_STYLES
from taskq_core.db import urls
from taskq_core.plugins import Registry
from taskq_core.records import NewTask
from taskq_core.settings import Settings

SOURCE = "demo"
QUERY = "demo_series"
# Generated rows, so the demo needs no table of its own; md5 gives every row some weight.
SQL = (
    "SELECT i AS id, md5(i::text) AS digest, i * 0.5 AS half, "
    "timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i) AS at "
    "FROM generate_series(1, %(rows)s) AS i"
)
ROWS = 2_000_000  # per export by default: a few seconds each on a laptop
EXPORTS = [  # (share of the rows, format, gzip)
    (1.0, "csv", True),
    (0.5, "jsonl", False),
    (1.0, "parquet", False),
]


def available() -> bool:
    return importlib.util.find_spec("taskq_export") is not None


def configure(database_url: str) -> None:
    """Declare the demo's source and query for this process and the workers it starts (they
    inherit the environment), unless the user declared exports of their own."""
    os.environ.setdefault("TASKQ_EXPORT_SOURCES", json.dumps({SOURCE: urls.conninfo(database_url)}))
    query = {
        "source": SOURCE,
        "description": "Generated demo rows.",
        "sql": SQL,
        "params": {"rows": {"type": "integer", "ge": 1, "le": 10_000_000}},
    }
    os.environ.setdefault("TASKQ_EXPORT_QUERIES", json.dumps({QUERY: query}))


def export_tasks(registry: Registry, rows: int = ROWS) -> list[NewTask]:
    """The demo's exports, validated like any request (so a user's own configuration that lacks
    the demo query makes the demo skip them rather than fail)."""
    if "ExportTask" not in registry or rows <= 0:
        return []
    made = []
    for share, fmt, gzip in EXPORTS:
        data = {
            "query": QUERY,
            "params": {"rows": max(1, int(rows * share))},
            "format": fmt,
            "gzip": gzip,
        }
        try:
            made.append(enqueue.prepare(registry, "ExportTask", data, 5, max_attempts=1))
        except Exception:
            return []
    return made


def bars(tasks: list[dict[str, Any]]) -> Table:
    """One line per export: its status, a progress bar, rows done of total, its message."""
    table = Table(title="exports", title_justify="left")
    for column in ("id", "format", "status", "progress", "rows", "message"):
        table.add_column(column, justify="right" if column in ("id", "rows") else "left")
    for task in tasks:
        progress = task.get("progress") or {}
        done = float(progress.get("done") or 0)
        total = progress.get("total")
        bar = ProgressBar(total=float(total) if total else None, completed=done, width=30)
        status = str(task["status"])
        table.add_row(
            str(task["id"]),
            str(task["input_data"].get("format", "")),
            Text(status, style=STATUS_STYLES.get(status, "")),
            bar,
            f"{done:,.0f}/{total:,.0f}" if total else f"{done:,.0f}",
            Text(str(progress.get("message") or "")),  # the task's words: never markup
        )
    return table


def artifacts_folder(settings: Settings) -> str:
    return artifacts.configured_url(settings)
