"""The command line prints task and plugin fields as data: markup in them is shown, not obeyed."""

from __future__ import annotations

import json

from tests.cli.test_cli import run, taskq
from tests.conftest import Servers

HOSTILE = {"a": "[link=https://a.example/]x"}  # shown in 40 characters


def test_tasks_show_prints_markup_in_fields_literally(clean: Servers) -> None:
    clean.sql(
        "INSERT INTO tasks (task_type, priority, input_data, max_attempts, status, error) "
        "VALUES ('[/x]', 3, %s, 3, 'failed', %s)",
        [json.dumps(HOSTILE), json.dumps({"type": "E", "message": "[link=file:///etc]x[/link]"})],
    )
    # A terminal, so that hyperlinks and styles would be written if the markup were obeyed.
    shown = run(taskq("tasks", "show", "1"), clean.env(COLUMNS="400", FORCE_COLOR="1"))
    assert shown.returncode == 0, shown.stderr  # `[/x]` raised MarkupError before
    assert "[/x]" in shown.stdout
    assert "\x1b]8;" not in shown.stdout  # OSC 8: a terminal hyperlink
    assert "[link=https://a.example/]x" in shown.stdout
    assert "[link=file:///etc]" in shown.stdout
