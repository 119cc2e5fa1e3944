"""EmailTask's TLS and login: certificates checked, no plaintext login, no password in an error."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from email_helpers import (
    CTX,
    PASSWORD,
    SENDER,
    ServerFactory,
    email_input,
    run_as_worker,
    use_server,
)
from pydantic import ValidationError
from taskq_email import EmailConfigError, EmailDeliveryError, EmailSettings, EmailTask

# -- TLS and login ----------------------------------------------------------------------------


def test_plaintext_login_is_refused_by_default(
    monkeypatch: pytest.MonkeyPatch, smtp_server: ServerFactory, credentials: Any
) -> None:
    server = smtp_server(auth=True, auth_require_tls=False)
    use_server(monkeypatch, server, username=credentials.username, password=credentials.password)

    outcome = run_as_worker({"to": ["ada@example.com"], "subject": "s", "body": "b"})

    assert outcome.error is not None
    assert outcome.error["type"] == "EmailConfigError"
    assert outcome.error["permanent"] is True
    assert "refusing to log in without TLS" in outcome.error["message"]
    assert "TASKQ_EMAIL_ALLOW_PLAINTEXT_LOGIN=true" in outcome.error["message"]
    assert server.received == []


def test_plaintext_login_when_explicitly_allowed(
    monkeypatch: pytest.MonkeyPatch, smtp_server: ServerFactory, credentials: Any
) -> None:
    server = smtp_server(auth=True, auth_require_tls=False)
    use_server(
        monkeypatch,
        server,
        username=credentials.username,
        password=credentials.password,
        allow_plaintext_login="true",
    )

    outcome = run_as_worker({"to": ["ada@example.com"], "subject": "s", "body": "b"})

    assert outcome.error is None, outcome.error
    assert server.received[0].authenticated


def test_tls_defaults_verify_the_certificate() -> None:
    settings = EmailSettings()
    assert (settings.starttls, settings.ssl, settings.allow_plaintext_login) == (
        False,
        False,
        False,
    )


def test_implicit_tls_refuses_an_untrusted_certificate(
    smtp_server: ServerFactory, server_tls_context: ssl.SSLContext
) -> None:
    server = smtp_server(ssl_context=server_tls_context)
    task = EmailTask(
        EmailSettings(smtp_host=server.host, smtp_port=server.port, ssl=True, from_address=SENDER)
    )

    with pytest.raises(EmailDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        task.run(email_input(), CTX)
    assert server.received == []


@pytest.mark.usefixtures("trust_test_cert")
def test_host_name_is_checked(
    smtp_server: ServerFactory, server_tls_context: ssl.SSLContext
) -> None:
    # A trusted certificate, for 127.0.0.1 and localhost: not for 127.0.0.2.
    server = smtp_server(host="127.0.0.2", tls_context=server_tls_context, require_starttls=True)
    task = EmailTask(
        EmailSettings(
            smtp_host=server.host, smtp_port=server.port, starttls=True, from_address=SENDER
        )
    )

    with pytest.raises(EmailDeliveryError, match="IP address mismatch"):
        task.run(email_input(), CTX)
    assert server.received == []


def test_private_ca_from_the_setting(
    smtp_server: ServerFactory,
    server_tls_context: ssl.SSLContext,
    tls_files: tuple[Path, Path],
    credentials: Any,
) -> None:
    server = smtp_server(
        tls_context=server_tls_context, require_starttls=True, auth=True, auth_required=True
    )
    task = EmailTask(
        EmailSettings(
            smtp_host=server.host,
            smtp_port=server.port,
            starttls=True,
            tls_ca_file=tls_files[0],
            username=credentials.username,
            password=credentials.password,
            from_address=SENDER,
        )
    )

    task.run(email_input(), CTX)

    assert server.received[0].tls
    assert server.received[0].authenticated


def test_missing_ca_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_TLS_CA_FILE", "/nonexistent/ca.pem")
    with pytest.raises(EmailConfigError, match="TASKQ_EMAIL_TLS_CA_FILE: Path does not point"):
        EmailTask()


# -- the password never leaks -----------------------------------------------------------------

BAD_CONFIGS = [
    pytest.param({"password": PASSWORD}, "USERNAME is required", id="password-without-user"),
    pytest.param(
        {"username": "mailer", "password": PASSWORD, "starttls": "1", "ssl": "1"},
        "exclusive",
        id="starttls-and-ssl",
    ),
    pytest.param(
        {"username": "mailer", "password": PASSWORD},
        "refusing to log in without TLS",
        id="plaintext-login",
    ),
    pytest.param(
        {"username": "mailer", "password": PASSWORD, "smtp_port": "x", "ssl": "1"},
        "TASKQ_EMAIL_SMTP_PORT: Input should be a valid integer",
        id="bad-port",
    ),
    pytest.param(
        {"username": "mailer", "password": PASSWORD, "ssl": "1", "timeout_seconds": "0"},
        "TASKQ_EMAIL_TIMEOUT_SECONDS: Input should be greater than 0",
        id="bad-timeout",
    ),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_a_settings_error_never_carries_the_password(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    unused_port: int,
    config: dict[str, str],
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TASKQ_EMAIL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TASKQ_EMAIL_SMTP_PORT", str(unused_port))
    monkeypatch.setenv("TASKQ_EMAIL_FROM", SENDER)
    for name, value in config.items():
        monkeypatch.setenv(f"TASKQ_EMAIL_{name.upper()}", value)

    outcome = run_as_worker({"to": ["ada@example.com"], "subject": "s", "body": "b"})
    # Also the way a host logs a failure, with its traceback.
    assert outcome.error is not None
    logging.getLogger("taskq.test").error("task 7 failed: %s", outcome.error)

    assert outcome.error["type"] == "EmailConfigError"
    assert outcome.error["permanent"] is True
    assert message in outcome.error["message"]
    out, err = capfd.readouterr()
    for text in (json.dumps(outcome.error), caplog.text, out, err):
        assert PASSWORD not in text
    with pytest.raises(ValidationError) as caught:
        EmailSettings()
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)
