"""EmailTask end to end: POST through the API, a real worker, a real SMTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import Api, Servers, Workers, free_port, wait_for
from tests.worker.test_reliability import finished, post

MESSAGE = {
    "task_type": "EmailTask",
    "input_data": {"to": ["ada@example.com"], "subject": "Hello", "body": "Hi Ada."},
}


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def test_an_email_task_is_delivered_over_smtp(
    api: Api, workers: Workers, clean: Servers, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    workers.start(
        TASKQ_EMAIL_SMTP_HOST="127.0.0.1",
        TASKQ_EMAIL_SMTP_PORT=str(port),
        TASKQ_EMAIL_FROM="taskq@example.com",
    )
    response = api.client.post(
        "/tasks/",
        json={
            "task_type": "EmailTask",
            "input_data": {
                "to": ["Ada <ada@example.com>"],
                "cc": ["bob@example.com"],
                "bcc": ["audit@example.com"],
                "reply_to": "help@example.com",
                "subject": "Your export is ready",
                "body": "Download it within 24 hours.",
                "html": "<p>Download it within <b>24 hours</b>.</p>",
            },
        },
    )
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    task = wait_for(
        lambda: (
            (t := api.client.get(f"/tasks/{task_id}").json())["status"] != "pending"
            and t["status"] != "running"
            and t
        ),
        what="the email task to finish",
    )
    assert task["status"] == "completed", task["error"]
    (recipients, message) = inbox.messages[0]
    assert sorted(recipients) == ["ada@example.com", "audit@example.com", "bob@example.com"]
    assert message["From"] == "taskq@example.com"
    assert message["To"] == "Ada <ada@example.com>"
    assert message["Cc"] == "bob@example.com"
    assert message["Reply-To"] == "help@example.com"
    assert message["Subject"] == "Your export is ready"
    assert message["Bcc"] is None
    assert message["Message-ID"] == task["result"]["message_id"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().strip() == "Download it within 24 hours."
    assert "<b>24 hours</b>" in html.get_content()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hello\r\nBcc: victim@example.com"),
        ("to", ["ada@example.com\nBcc: victim@example.com"]),
        ("reply_to", "help@example.com\r\nX-Evil: 1"),
    ],
)
def test_header_injection_is_refused_before_anything_is_written(
    api: Api, clean: Servers, field: str, value: object
) -> None:
    data: dict[str, object] = {"to": ["ada@example.com"], "subject": "Hi", "body": "x"}
    data[field] = value
    response = api.client.post("/tasks/", json={"task_type": "EmailTask", "input_data": data})
    assert response.status_code == 422
    locs = [tuple(e["loc"][:3]) for e in response.json()["detail"]]
    assert ("body", "input_data", field) in locs
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_without_settings_an_email_task_fails_at_once_naming_the_sender_setting(
    api: Api, workers: Workers, clean: Servers
) -> None:
    workers.start()  # no TASKQ_EMAIL_* at all, as under a plain `make dev`
    task = finished(api, post(api, MESSAGE)["id"])
    assert task["status"] == "failed"
    assert task["attempts"] == 1  # permanent: retrying cannot make a sender appear
    assert task["error"]["type"] == "EmailConfigError"
    assert task["error"]["message"] == "no sender configured: set TASKQ_EMAIL_FROM"


def test_with_no_smtp_server_set_the_failure_names_the_host_setting(
    api: Api, workers: Workers, clean: Servers
) -> None:
    port = free_port()  # nothing listens there: as localhost:25 on a machine without a relay
    workers.start(TASKQ_EMAIL_FROM="taskq@example.com", TASKQ_EMAIL_SMTP_PORT=str(port))
    task = finished(api, post(api, {**MESSAGE, "max_attempts": 1})["id"])
    assert task["status"] == "failed"
    assert task["error"]["type"] == "EmailDeliveryError"
    message = task["error"]["message"]
    assert message.startswith(f"could not connect to SMTP server at localhost:{port}: ")
    assert message.endswith("(TASKQ_EMAIL_SMTP_HOST is not set: the default was tried)")
