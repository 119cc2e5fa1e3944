"""The command line prints task and plugin fields as data: markup in them is shown, not obeyed."""

from __future__ import annotations

import json

from tests.cli.terminal import on_a_terminal
from tests.conftest import Api, Servers, taskq

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
