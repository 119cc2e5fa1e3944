"""EmailTask against real SMTP servers (aiosmtpd): headers, envelope, TLS, AUTH, failures."""

from __future__ import annotations

import importlib.metadata
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest
import taskq_email
from pydantic import SecretStr, ValidationError
from taskq_email import (
    EmailConfigError,
    EmailDeliveryError,
    EmailInput,
    EmailOutput,
    EmailSettings,
    EmailTask,
)

from taskq_core import TaskContext, hookspecs

CTX = TaskContext(
    task_id=42, task_type="EmailTask", attempt=1, max_attempts=3, priority=3, worker_id="w1"
)
SENDER = "Taskq <noreply@example.com>"
# `smtp_server(...)` returns the conftest's Server: `.host`, `.port`, `.received`.
ServerFactory = Callable[..., Any]


def email_task(server: Any, **settings: Any) -> EmailTask:
    """An EmailTask sending through `server` (anything with `.host` and `.port`)."""
    settings.setdefault("from_address", SENDER)
    settings.setdefault("timeout_seconds", 10)
    return EmailTask(EmailSettings(smtp_host=server.host, smtp_port=server.port, **settings))


def email_input(**fields: Any) -> EmailInput:
    data = {"to": ["ada@example.com"], "subject": "Hello", "body": "Hi Ada.\n"} | fields
    # Through JSON, as the API and the worker receive it.
    return EmailInput.model_validate_json(json.dumps(data))


# -- delivery ---------------------------------------------------------------------------------


def test_message_headers_envelope_and_body(smtp_server: ServerFactory) -> None:
    server = smtp_server()
    data = email_input(
        to=["Ada Lovelace <ada@example.com>", "grace@example.com"],
        cc=["Charles <charles@example.com>"],
        bcc=["secret@example.com"],
        reply_to="support@example.com",
        subject="Your report is ready",
        body="Line one.\nLine two.\n",
    )

    output = email_task(server).run(data, CTX)

    [got] = server.received
    message = got.message
    assert message["From"] == "Taskq <noreply@example.com>"
    assert message["To"] == "Ada Lovelace <ada@example.com>, grace@example.com"
    assert message["Cc"] == "Charles <charles@example.com>"
    assert message["Reply-To"] == "support@example.com"
    assert message["Subject"] == "Your report is ready"
    assert message["Date"] is not None
    assert message["Message-ID"] == output.message_id
    assert output.message_id.startswith("<")
    assert output.message_id.endswith("@example.com>")
    assert "taskq.42" in output.message_id
    # Bcc: in the envelope, nowhere in the message.
    assert "Bcc" not in message
    assert b"secret@example.com" not in message.as_bytes()
    assert got.mail_from == "noreply@example.com"
    expected = ["ada@example.com", "grace@example.com", "charles@example.com", "secret@example.com"]
    assert got.rcpt_tos == expected
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Line one.\nLine two.\n"
    assert output == EmailOutput(message_id=output.message_id, recipients=expected, refused={})


def test_html_makes_multipart_alternative(smtp_server: ServerFactory) -> None:
    server = smtp_server()
    data = email_input(body="Plain text.\n", html="<p>Rich <b>text</b>.</p>\n")

    email_task(server).run(data, CTX)

    message = server.received[0].message
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == "Plain text.\n"
    assert parts[1].get_content() == "<p>Rich <b>text</b>.</p>\n"


def test_non_ascii_subject_names_and_body(smtp_server: ServerFactory) -> None:
    server = smtp_server()
    data = email_input(to=["Zoë Ångström <zoe@example.com>"], subject="Café ☕", body="Grüße\n")

    email_task(server).run(data, CTX)

    message = server.received[0].message
    assert message["Subject"] == "Café ☕"
    assert message["To"] == "Zoë Ångström <zoe@example.com>"
    assert message.get_content() == "Grüße\n"


def test_duplicate_recipient_gets_one_copy(smtp_server: ServerFactory) -> None:
    server = smtp_server()
    data = email_input(to=["ada@example.com"], bcc=["ada@example.com"])

    output = email_task(server).run(data, CTX)

    assert server.received[0].rcpt_tos == ["ada@example.com"]
    assert output.recipients == ["ada@example.com"]


def test_validated_input_survives_a_round_trip() -> None:
    # The API validates and stores the input; the worker validates the stored JSON again.
    data = email_input(
        to=['"Lovelace, Ada" <ada@example.com>', "Zoë <zoe@example.com>"],
        reply_to="Help Desk <help@example.com>",
    )
    again = EmailInput.model_validate_json(data.model_dump_json())
    assert again == data


# -- refusals and failures --------------------------------------------------------------------


def test_some_recipients_refused_is_reported_not_raised(smtp_server: ServerFactory) -> None:
    # The message reached the others: failing the task would make a retry send it twice.
    server = smtp_server(refuse_rcpt={"nobody@example.com"})
    data = email_input(to=["ada@example.com", "nobody@example.com"])

    output = email_task(server).run(data, CTX)

    assert output.recipients == ["ada@example.com"]
    assert output.refused == {"nobody@example.com": "550 5.1.1 No such user here"}
    assert server.received[0].rcpt_tos == ["ada@example.com"]


def test_all_recipients_refused_raises(smtp_server: ServerFactory) -> None:
    server = smtp_server(refuse_rcpt={"nobody@example.com"})

    with pytest.raises(EmailDeliveryError, match="refused every recipient") as caught:
        email_task(server).run(email_input(to=["nobody@example.com"]), CTX)

    assert "nobody@example.com: 550 5.1.1 No such user here" in str(caught.value)
    assert server.received == []


def test_message_refused_at_data_raises(smtp_server: ServerFactory) -> None:
    server = smtp_server(data_reply="554 5.7.1 Message rejected as spam")

    with pytest.raises(
        EmailDeliveryError, match=r"refused the message: 554 5\.7\.1 Message rejected"
    ):
        email_task(server).run(email_input(), CTX)


def test_server_not_listening_raises(unused_port: int) -> None:
    nowhere = SimpleNamespace(host="127.0.0.1", port=unused_port)

    with pytest.raises(
        EmailDeliveryError, match=f"could not connect to SMTP server at 127.0.0.1:{unused_port}"
    ):
        email_task(nowhere).run(email_input(), CTX)


def test_missing_sender_raises_config_error(smtp_server: ServerFactory) -> None:
    server = smtp_server()

    with pytest.raises(EmailConfigError, match="TASKQ_EMAIL_FROM"):
        email_task(server, from_address=None).run(email_input(), CTX)
    assert server.received == []


# -- AUTH and TLS -----------------------------------------------------------------------------


def test_login_over_plain_smtp_when_allowed(smtp_server: ServerFactory, credentials: Any) -> None:
    server = smtp_server(auth=True, auth_require_tls=False)
    task = email_task(
        server,
        username=credentials.username,
        password=credentials.password,
        allow_plaintext_login=True,
    )

    task.run(email_input(), CTX)

    [got] = server.received
    assert got.authenticated
    assert not got.tls


def test_wrong_password_raises(smtp_server: ServerFactory, credentials: Any) -> None:
    server = smtp_server(auth=True, auth_require_tls=False)
    task = email_task(
        server, username=credentials.username, password="wrong", allow_plaintext_login=True
    )

    with pytest.raises(EmailDeliveryError, match="authentication as 'mailer' failed") as caught:
        task.run(email_input(), CTX)
    assert "wrong" not in str(caught.value)


@pytest.mark.usefixtures("trust_test_cert")
def test_starttls_then_login(
    smtp_server: ServerFactory, server_tls_context: ssl.SSLContext, credentials: Any
) -> None:
    # The server insists on STARTTLS before anything else and on AUTH before MAIL.
    server = smtp_server(
        tls_context=server_tls_context, require_starttls=True, auth=True, auth_required=True
    )
    task = email_task(
        server, starttls=True, username=credentials.username, password=credentials.password
    )

    task.run(email_input(), CTX)

    [got] = server.received
    assert got.tls
    assert got.authenticated


@pytest.mark.usefixtures("trust_test_cert")
def test_implicit_tls(smtp_server: ServerFactory, server_tls_context: ssl.SSLContext) -> None:
    server = smtp_server(ssl_context=server_tls_context)

    email_task(server, ssl=True).run(email_input(), CTX)

    assert server.received[0].tls


def test_untrusted_certificate_is_refused(
    smtp_server: ServerFactory, server_tls_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls_context=server_tls_context, require_starttls=True)

    with pytest.raises(EmailDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        email_task(server, starttls=True).run(email_input(), CTX)
    assert server.received == []


def test_starttls_not_offered_raises(smtp_server: ServerFactory) -> None:
    server = smtp_server()

    with pytest.raises(EmailDeliveryError, match="STARTTLS extension not supported"):
        email_task(server, starttls=True).run(email_input(), CTX)


# -- input validation -------------------------------------------------------------------------

INJECTIONS = [
    ({"subject": "Hello\nBcc: evil@x.com"}, ("subject",)),
    ({"subject": "Hello\r\nBcc: evil@x.com"}, ("subject",)),
    ({"subject": "Hello\rthere"}, ("subject",)),
    ({"subject": "Hello\u2028there"}, ("subject",)),
    ({"to": ["a@example.com\r\nBcc: evil@x.com"]}, ("to", 0)),
    ({"to": ["ok@example.com", "Evil\nBcc: evil@x.com <a@example.com>"]}, ("to", 1)),
    ({"cc": ["a@example.com\nBcc: evil@x.com"]}, ("cc", 0)),
    ({"bcc": ["a@example.com\r\nX-Injected: 1"]}, ("bcc", 0)),
    ({"reply_to": "a@example.com\r\nBcc: evil@x.com"}, ("reply_to",)),
    ({"reply_to": '"Help\r\nBcc: evil@x.com" <help@example.com>'}, ("reply_to",)),
]


@pytest.mark.parametrize(("fields", "loc"), INJECTIONS)
def test_header_injection_is_rejected_with_the_field(
    fields: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        email_input(**fields)

    [error] = caught.value.errors()
    assert error["loc"] == loc
    assert "CR, LF" in error["msg"]


@pytest.mark.parametrize(
    ("fields", "loc", "error_type"),
    [
        ({"to": ["not-an-address"]}, ("to", 0), "value_error"),
        ({"cc": ["ada@"]}, ("cc", 0), "value_error"),
        ({"reply_to": "@example.com"}, ("reply_to",), "value_error"),
        ({"to": []}, ("to",), "too_short"),
        ({"to": "ada@example.com"}, ("to",), "list_type"),
        ({"subject": "x" * 999}, ("subject",), "string_too_long"),
        ({"from_address": "boss@example.com"}, ("from_address",), "extra_forbidden"),
        ({"attachments": []}, ("attachments",), "extra_forbidden"),
    ],
)
def test_invalid_input_is_rejected_with_the_field(
    fields: dict[str, Any], loc: tuple[str | int, ...], error_type: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        email_input(**fields)

    [error] = caught.value.errors()
    assert error["loc"] == loc
    assert error["type"] == error_type


def test_missing_fields_are_named() -> None:
    with pytest.raises(ValidationError) as caught:
        EmailInput.model_validate({})
    assert {e["loc"] for e in caught.value.errors()} == {("to",), ("subject",), ("body",)}


def test_recipient_cap_covers_to_cc_and_bcc() -> None:
    addresses = [f"user{i}@example.com" for i in range(51)]
    with pytest.raises(ValidationError, match="at most 50 recipients"):
        email_input(to=addresses[:20], cc=addresses[20:40], bcc=addresses[40:])
    email_input(to=addresses[:20], cc=addresses[20:40], bcc=addresses[40:50])


# -- settings ---------------------------------------------------------------------------------


def test_starttls_and_ssl_together_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="exclusive"):
        EmailSettings(starttls=True, ssl=True)


@pytest.mark.parametrize(
    ("options", "port"),
    [({}, 25), ({"starttls": True}, 587), ({"ssl": True}, 465), ({"smtp_port": 2525}, 2525)],
)
def test_default_port_follows_connection_security(options: dict[str, Any], port: int) -> None:
    assert EmailSettings(**options).port == port


def test_username_and_password_come_together() -> None:
    with pytest.raises(ValidationError, match="PASSWORD is required"):
        EmailSettings(username="mailer")
    with pytest.raises(ValidationError, match="USERNAME is required"):
        EmailSettings(password=SecretStr("x"))


def test_sender_setting_is_checked_for_injection() -> None:
    with pytest.raises(ValidationError, match="CR, LF"):
        EmailSettings(from_address="noreply@example.com\r\nBcc: evil@x.com")


def test_task_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("TASKQ_EMAIL_STARTTLS", "true")
    monkeypatch.setenv("TASKQ_EMAIL_USERNAME", "mailer")
    monkeypatch.setenv("TASKQ_EMAIL_PASSWORD", "hunter2")
    monkeypatch.setenv("TASKQ_EMAIL_FROM", "Reports <reports@example.com>")
    monkeypatch.setenv("TASKQ_EMAIL_TIMEOUT_SECONDS", "7.5")

    settings = EmailTask().settings

    assert settings.smtp_host == "mail.example.com"
    assert settings.port == 587
    assert settings.from_address == "Reports <reports@example.com>"
    assert settings.timeout_seconds == 7.5
    assert settings.password is not None
    assert settings.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_task_reads_dotenv(tmp_path: Path) -> None:
    # The autouse fixture made tmp_path the working directory.
    (tmp_path / ".env").write_text(
        "TASKQ_DATABASE_URL=postgresql://elsewhere\n"
        "TASKQ_EMAIL_SMTP_HOST=relay.internal\n"
        "TASKQ_EMAIL_SSL=1\n"
        "TASKQ_EMAIL_FROM=noreply@example.com\n"
    )

    settings = EmailTask().settings

    assert (settings.smtp_host, settings.port, settings.ssl) == ("relay.internal", 465, True)
    assert settings.from_address == "noreply@example.com"


# -- plugin registration ----------------------------------------------------------------------


def test_hook_registers_email_task() -> None:
    registered: list[type] = []
    taskq_email.register_task_types(register=registered.append)
    assert registered == [EmailTask]
    assert EmailTask.name == "EmailTask"
    assert EmailTask.Input is EmailInput
    assert EmailTask.Output is EmailOutput


def test_installed_entry_point_reaches_the_hook() -> None:
    [entry_point] = [
        ep for ep in importlib.metadata.entry_points(group="taskq.tasks") if ep.name == "email"
    ]
    assert entry_point.value == "taskq_email"
    assert entry_point.dist is not None
    assert entry_point.dist.name == "taskq-email"

    # The host's path: entry point -> pluggy PluginManager -> register_task_types.
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(entry_point.load(), name=entry_point.name)
    manager.check_pending()
    registered: list[type] = []
    manager.hook.register_task_types(register=registered.append)
    assert registered == [EmailTask]
