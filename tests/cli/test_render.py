"""The command line prints task and plugin fields as data: markup in them is shown, not obeyed;
and its tables fit an 80-column terminal, times shown short and whole."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

from tests.cli.terminal import on_a_terminal
from tests.conftest import Api, Servers, Workers, taskq
from tests.worker.test_reliability import FAST, finished, post

HOSTILE = {"a": "[link=https://a.example/]x"}  # shown in 40 characters


def test_tasks_show_prints_markup_in_fields_literally(api: Api, clean: Servers) -> None:
    for task_type in ("[/x]", "[link=https://a.example/]x"):
        clean.sql(
            "INSERT INTO tasks (task_type, priority, input_data, max_attempts, status, error) "
            "VALUES (%s, 3, %s, 3, 'failed', %s)",
            [task_type, json.dumps(HOSTILE), json.dumps({"type": "E", "message": "[b]x"})],
        )
    # A terminal, so that hyperlinks and styles would be written if the markup were obeyed.
    env = clean.env(TASKQ_API_URL=api.url, COLUMNS="400", TERM="xterm", FORCE_COLOR="1")
    code, screen, errors = on_a_terminal(taskq("tasks", "show", "2"), env)
    assert code == 0, errors  # `[/x]` raised MarkupError before
    assert "[/x]" in screen
    assert "\x1b]8;" not in screen  # OSC 8: a terminal hyperlink
    assert "[link=https://a.example/]x" in screen


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def screen_lines(screen: str) -> list[str]:
    return [ANSI.sub("", line).rstrip() for line in screen.splitlines()]


def body_rows(lines: list[str]) -> list[str]:
    """The table's body lines (heavy lines are its header); a folded row takes more than one."""
    return [line for line in lines if line.startswith("│")]


def test_terminal_times_are_short_and_local() -> None:
    now = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    with_zone = {**os.environ, "TZ": "Asia/Kolkata"}  # UTC+05:30 all year
    program = (
        "from datetime import datetime; from taskq_core.cli.output import terminal_time as t; "
        f"now = datetime.fromisoformat({now.isoformat()!r}); "
        "print([t(v, now) for v in ('2026-07-15T01:02:03Z', '2026-07-14T20:00:00+00:00', "
        "'2026-02-01T10:20:30.123456Z', '2025-06-30T12:00:00Z', 'not a time')])"
    )
    shown = subprocess.run(
        [sys.executable, "-c", program], env=with_zone, capture_output=True, text=True, check=True
    ).stdout
    # Today in local time (20:00 UTC on the 14th is 01:30 on the 15th there); this year; before.
    assert shown.strip() == str(["06:32:03", "01:30:00", "02-01 15:50", "2025-06-30", "not a time"])


def test_tables_fit_an_80_column_terminal_with_whole_short_times(
    api: Api, clean: Servers, workers: Workers
) -> None:
    # A task finished in another year shows its date; tasks of today their time of day.
    (old_id,) = clean.sql(
        "INSERT INTO tasks (task_type, priority, input_data, max_attempts, status, created_at, "
        "finished_at) VALUES ('FibonacciTask', 3, '{\"n\": 1}', 3, 'completed', "
        "'2024-03-05 06:07:08+00', '2024-03-05 06:09:10+00') RETURNING id"
    )[0]
    workers.start(TASKQ_RETENTION_COMPLETED="off", **FAST)  # the sweeper would delete it
    failing = post(api, {"task_type": "FailTask", "input_data": {"message": "no " * 30}})
    pending = post(
        api, {"task_type": "FibonacciTask", "input_data": {"n": 3}, "delay_seconds": 600}
    )
    failed = finished(api, failing["id"])
    env = clean.env(TASKQ_API_URL=api.url, COLUMNS="80", TERM="xterm", TZ="UTC")

    code, screen, errors = on_a_terminal(taskq("tasks", "show"), env)
    assert code == 0, errors
    lines = screen_lines(screen)
    assert max(map(len, lines)) <= 80, screen
    rows = body_rows(lines)
    assert len(rows) == 3, screen  # one line per task: nothing folded

    def at(value: object) -> str:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%H:%M:%S")

    row = {int(line.split("│")[1]): line for line in rows}
    assert row[old_id].count("2024-03-05") == 2
    assert at(pending["created_at"]) in row[int(str(pending["id"]))]
    assert at(failed["created_at"]) in row[int(str(failed["id"]))]
    assert at(failed["finished_at"]) in row[int(str(failed["id"]))]

    code, screen, errors = on_a_terminal(taskq("tasks", "get", str(failed["id"])), env)
    assert code == 0, errors
    lines = screen_lines(screen)
    # Its attempts table fits (the fields above it are `name value` lines, each in full).
    assert max(len(line) for line in lines if line[:1] in "┏┃┡│└") <= 80, screen
    history = failed["history"]
    assert isinstance(history, list)
    started, ended = at(history[0]["started_at"]), at(history[0]["finished_at"])
    assert any(started in line and ended in line for line in body_rows(lines)), screen
