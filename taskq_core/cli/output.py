"""How the command line prints: tables for people at a terminal, tab-separated lines (never
folded, never cut) or JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}
SHORT = 40  # characters of a JSON value shown in a terminal's table
# Narrower headers for a terminal's table (scripts get the full names).
TERMINAL_HEADERS = {"priority": "prio", "attempts": "tries", "last_used": "last used"}


def to_terminal() -> bool:
    return sys.stdout.isatty()


def console() -> Console:
    """A console whose lines are never wrapped at 80 columns when stdout is a pipe or a file."""
    return Console(soft_wrap=not to_terminal())


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2 if to_terminal() else None, default=str))


def print_json_line(value: Any) -> None:
    """One JSON object per line, flushed: for a stream a script reads as it comes."""
    print(json.dumps(value, default=str, separators=(",", ":")), flush=True)


def progress_line(task: Mapping[str, Any], sep: str = "\t") -> str:
    """`running  1240000/5000000 (24.8%)  message`: a task's status and progress on one line."""
    progress = task.get("progress") or {}
    parts = [str(task["status"])]
    if progress:
        done: float = progress.get("done") or 0
        total: float | None = progress.get("total")
        amount = f"{done:g}" if total is None else f"{done:g}/{total:g}"
        if total:
            amount += f" ({100 * done / total:.1f}%)"
        parts.append(amount)
        if progress.get("message"):
            parts.append(_cell(str(progress["message"])))
    return sep.join(parts)


def compact(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _cell(value: str) -> str:
    # One row per line and one column per tab, whatever a value holds.
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def terminal_time(value: str, now: datetime | None = None) -> str:
    """An ISO 8601 instant as a person at a terminal reads it: local time, at most 11 characters
    (`14:03:27` today, `11-28 09:15` earlier this year, `2025-12-31` before), so a listing's two
    times fit an 80-column table. Scripts get the full value."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    local = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone()
    today = (now or datetime.now(UTC)).astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    if local.year == today.year:
        return local.strftime("%m-%d %H:%M")
    return local.strftime("%Y-%m-%d")


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    styles: Mapping[int, str],
    times: Collection[int] = (),
) -> None:
    """A rich table at a terminal (long values shortened); else a header line and one
    tab-separated line per row with every value in full. `styles`: column index -> the
    STATUS_STYLES key column to colour by (only at a terminal). `times`: the indexes of columns
    holding ISO 8601 instants, shown short at a terminal and never folded."""
    if not to_terminal():
        print("\t".join(columns))
        for row in rows:
            print("\t".join(_cell(value) for value in row))
        return
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        header = TERMINAL_HEADERS.get(column, column)
        if index in times:
            table.add_column(header, no_wrap=True)
        else:
            table.add_column(header, overflow="fold")
    for row in rows:
        shown = [
            terminal_time(value) if index in times and value else value
            for index, value in enumerate(row)
        ]
        # Text, not markup: a value of `[/x]` would crash rich, `[link=...]` plant a hyperlink.
        cells = [
            Text(value if len(value) <= SHORT else value[: SHORT - 1] + "…") for value in shown
        ]
        for index in styles:
            cells[index].stylize(STATUS_STYLES.get(row[index], ""))
        table.add_row(*cells)
    Console().print(table)


TASK_COLUMNS = ("id", "type", "status", "priority", "attempts", "created", "finished")


def task_row(task: Mapping[str, Any]) -> list[str]:
    """A listing's row: the task's state (listings carry no bodies; `taskq tasks get` does)."""
    return [
        str(task["id"]),
        task["task_type"],
        task["status"],
        str(task["priority"]),
        f"{task['attempts']}/{task['max_attempts']}",
        str(task["created_at"]),
        str(task.get("finished_at") or ""),
    ]


def print_tasks(tasks: Sequence[Mapping[str, Any]], title: str) -> None:
    print_table(title, TASK_COLUMNS, [task_row(t) for t in tasks], {2: "status"}, times=(5, 6))


def print_task(task: Mapping[str, Any]) -> None:
    """One task, field by field, then its attempts; every value in full."""
    fields = (
        *("id", "task_type", "status", "priority", "attempts", "max_attempts", "created_at"),
        *("run_at", "started_at", "finished_at", "worker_id", "timeout_seconds"),
        "cancel_requested_at",
    )
    lines = [(name, "" if task.get(name) is None else str(task[name])) for name in fields]
    if task.get("progress"):
        lines.append(("progress", progress_line(task, " ").split(" ", 1)[-1]))
    for artifact in task.get("artifacts") or []:
        described = f"{artifact['name']} {artifact['size']} bytes {artifact['content_type']}"
        lines.append(("artifact", f"{described} sha256:{artifact['sha256']}"))
    lines.append(("input_data", compact(task["input_data"])))
    lines.append(("result", compact(task.get("result"))))
    error = task.get("error")
    if error:
        lines.append(("error", f"{error['type']}: {error['message']}"))
    for name, value in lines:
        print(f"{name}\t{_cell(value)}" if not to_terminal() else f"{name:<20} {value}")
    if error and error.get("traceback"):
        print("traceback" + ("\t" + _cell(error["traceback"]) if not to_terminal() else ":"))
        if to_terminal():
            print(error["traceback"].rstrip())
    history = task.get("history") or []
    if history:
        print()
        rows = [
            [
                str(h["attempt"]),
                h["outcome"],
                compact(h.get("worker_id")),
                str(h.get("started_at") or ""),
                str(h["finished_at"]),
                "" if not h.get("error") else f"{h['error']['type']}: {h['error']['message']}",
            ]
            for h in history
        ]
        columns = ("attempt", "outcome", "worker", "started", "finished", "error")
        print_table("attempts", columns, rows, {}, times=(3, 4))
