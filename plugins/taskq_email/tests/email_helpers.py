"""Helpers shared by the EmailTask tests: inputs, and one attempt run the way a worker runs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import taskq_email
from taskq_email import EmailInput

from taskq_core import TaskContext
from taskq_core.plugins import load_registry
from taskq_core.worker.execution import Instances, Job, Outcome

CTX = TaskContext(
    task_id=7, task_type="EmailTask", attempt=1, max_attempts=3, priority=3, worker_id="w1"
)
SENDER = "Taskq <noreply@example.com>"
PASSWORD = "Sup3r-s3cret-smtp-pw"
ServerFactory = Callable[..., Any]  # the conftest's smtp_server


def email_input(**fields: Any) -> EmailInput:
    data = {"to": ["ada@example.com"], "subject": "Hello", "body": "Hi Ada.\n"} | fields
    return EmailInput.model_validate_json(json.dumps(data))


def unchecked_input(**fields: Any) -> EmailInput:
    """An input that skipped validation, to show the message building holds on its own."""
    data: dict[str, Any] = {
        "to": ["ada@example.com"],
        "cc": [],
        "bcc": [],
        "reply_to": None,
        "subject": "Hello",
        "body": "Hi Ada.\n",
        "html": None,
    }
    return EmailInput.model_construct(**(data | fields))


def run_as_worker(input_data: dict[str, Any]) -> Outcome:
    """One attempt the way a worker runs it: the plugin loaded by the host, its instance made
    on first use, the input validated, `run` called, any exception described as the task's
    error (what `tasks.error` stores and the worker logs)."""
    registry = load_registry([taskq_email], use_entry_points=False)
    job = Job(
        task_id=7,
        task_type="EmailTask",
        input_data=input_data,
        attempt=1,
        max_attempts=3,
        priority=3,
        worker_id="w1",
    )
    return Instances().run_sync(registry.get("EmailTask"), job)


def use_server(monkeypatch: pytest.MonkeyPatch, server: Any, **settings: str) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_SMTP_HOST", server.host)
    monkeypatch.setenv("TASKQ_EMAIL_SMTP_PORT", str(server.port))
    monkeypatch.setenv("TASKQ_EMAIL_FROM", SENDER)
    monkeypatch.setenv("TASKQ_EMAIL_TIMEOUT_SECONDS", "10")
    for name, value in settings.items():
        monkeypatch.setenv(f"TASKQ_EMAIL_{name.upper()}", value)
