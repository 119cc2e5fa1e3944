"""EmailTask's defences: no injected header, limits, allow-list, TLS, and no password in errors."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import taskq_email
from pydantic import ValidationError
from taskq_email import (
    EmailConfigError,
    EmailDeliveryError,
    EmailHeaderError,
    EmailInput,
    EmailSettings,
    EmailTask,
)
from taskq_email.limits import current_limits
from taskq_email.message import build_envelope, check_wire

from taskq_core import TaskContext
from taskq_core.plugins import load_registry
from taskq_core.worker.execution import Instances, Job, Outcome

CTX = TaskContext(
    task_id=7, task_type="EmailTask", attempt=1, max_attempts=3, priority=3, worker_id="w1"
)
SENDER = "Taskq <noreply@example.com>"
PASSWORD = "Sup3r-s3cret-smtp-pw"
ServerFactory = Callable[..., Any]


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


# -- header injection -------------------------------------------------------------------------

ENCODED_INJECTIONS = [
    ({"subject": "=?utf-8?q?Hello=0D=0ABcc:_evil@x.com?="}, ("subject",)),
    ({"subject": "Café =?utf-8?q?Hi=0A=0Afake_body?="}, ("subject",)),
    ({"subject": "=?utf-8?b?SGkNCkJjYzogZXZpbEB4LmNvbQ==?="}, ("subject",)),
    ({"subject": "=?utf-8?q?a=00b?="}, ("subject",)),
    ({"to": ["=?utf-8?q?Evil=0D=0ABcc=3A_x?= <a@example.com>"]}, ("to", 0)),
    ({"cc": ['"=?utf-8?q?Evil=0D=0A=0D=0Abody?=" <a@example.com>']}, ("cc", 0)),
    ({"reply_to": "=?utf-8?q?Help=0ABcc=3A_x?= <help@example.com>"}, ("reply_to",)),
]


@pytest.mark.parametrize(("fields", "loc"), ENCODED_INJECTIONS)
def test_encoded_words_that_decode_to_a_line_break_are_refused(
    fields: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    # The email package decodes RFC 2047 encoded words when it writes a header: without this
    # check the Subject above went out as `Subject: Hello` + `Bcc: evil@x.com` (Python 3.11.7).
    with pytest.raises(ValidationError) as caught:
        email_input(**fields)

    [error] = caught.value.errors()
    assert error["loc"] == loc
    assert "CR, LF" in error["msg"]


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hello\r\nBcc: evil@x.com"},
        {"subject": "=?utf-8?q?Hello=0D=0ABcc:_evil@x.com?="},
        {"subject": "=?utf-8?q?Hi=0D=0A=0D=0A?=fake body"},
        {"to": ["=?utf-8?q?Evil=0D=0ABcc=3A_x?= <a@example.com>"]},
        {"reply_to": "=?utf-8?q?Help=0ABcc=3A_x?= <help@example.com>"},
    ],
)
def test_unvalidated_input_cannot_inject_a_header(
    smtp_server: ServerFactory, fields: dict[str, Any]
) -> None:
    server = smtp_server()
    task = EmailTask(
        EmailSettings(smtp_host=server.host, smtp_port=server.port, from_address=SENDER)
    )

    with pytest.raises(EmailHeaderError, match="refusing to write the"):
        task.run(unchecked_input(**fields), CTX)
    assert server.received == []


def test_header_error_is_permanent() -> None:
    outcome_error = EmailHeaderError("x")
    assert isinstance(outcome_error, taskq_email.EmailError)
    from taskq_core import PermanentError

    assert isinstance(outcome_error, PermanentError)
    assert isinstance(EmailConfigError("x"), PermanentError)
    assert not isinstance(EmailDeliveryError("x"), PermanentError)


def test_wire_check_accepts_what_build_makes() -> None:
    envelope = build_envelope(
        email_input(cc=["c@example.com"], reply_to="r@example.com", html="<p>x</p>"),
        SENDER,
        "taskq.1",
    )
    head = envelope.data.partition(b"\r\n\r\n")[0].decode()
    names = [line.split(":")[0] for line in head.split("\r\n") if not line[0].isspace()]
    assert names == [
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
    ]


GOOD_HEAD = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\n"


@pytest.mark.parametrize(
    ("data", "expected", "match"),
    [
        (GOOD_HEAD + b"Bcc: evil@x.com\r\n\r\nbody\r\n", ["from", "to", "subject"], "headers"),
        (GOOD_HEAD + b"\r\nbody\r\n", ["from", "to", "subject", "date"], "headers"),
        (GOOD_HEAD + b"X-Evil: 1\r\n\r\nbody\r\n", ["from", "to", "subject", "x-evil"], "headers"),
        (GOOD_HEAD + b"Subject: Hi\r\n\r\nb\r\n", ["from", "to", "subject", "subject"], "headers"),
        (b"From: a@example.com\nBcc: x\r\nTo: b\r\n\r\nb\r\n", ["from", "to"], "bare CR or LF"),
        (GOOD_HEAD + b"\r\nbody\n.\nMAIL FROM:<x>\r\n", ["from", "to", "subject"], "bare CR"),
        (GOOD_HEAD + b"\r\nbody\r.\r\n", ["from", "to", "subject"], "bare CR"),
    ],
)
def test_wire_check_refuses(data: bytes, expected: list[str], match: str) -> None:
    with pytest.raises(EmailHeaderError, match=match):
        check_wire(data, expected)
    check_wire(GOOD_HEAD + b"\r\nbody\r\n", ["from", "to", "subject"])


def test_bodies_with_any_line_ends_go_out_as_crlf(smtp_server: ServerFactory) -> None:
    # A lone "." line or bare CR/LF in the body must not end DATA early (SMTP smuggling).
    server = smtp_server()
    body = "one\rtwo\nthree\r\n.\nfour\r\n.\r\nfive\n"
    data = email_input(body=body, html="<p>a</p>\r.\r<p>b</p>")
    task = EmailTask(
        EmailSettings(smtp_host=server.host, smtp_port=server.port, from_address=SENDER)
    )

    task.run(data, CTX)

    [got] = server.received
    text = got.message.get_body(("plain",))
    assert text is not None
    assert text.get_content() == "one\ntwo\nthree\n.\nfour\n.\nfive\n"


# -- limits -----------------------------------------------------------------------------------


def test_schema_keeps_the_static_recipient_ceiling() -> None:
    schema = EmailInput.model_json_schema()
    assert {schema["properties"][f]["maxItems"] for f in ("to", "cc", "bcc")} == {100}
    assert schema["properties"]["subject"]["maxLength"] == 998


def test_recipient_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_MAX_RECIPIENTS", "3")

    email_input(to=["a@example.com", "b@example.com"], bcc=["c@example.com"])
    with pytest.raises(ValidationError, match=r"at most 3 recipients.*MAX_RECIPIENTS"):
        email_input(to=["a@example.com", "b@example.com"], cc=["c@example.com", "d@example.com"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("101", "TASKQ_EMAIL_MAX_RECIPIENTS: Input should be less than or equal to 100"),
        ("0", "TASKQ_EMAIL_MAX_RECIPIENTS: Input should be greater than or equal to 1"),
        ("many", "TASKQ_EMAIL_MAX_RECIPIENTS: Input should be a valid integer"),
    ],
)
def test_bad_limit_makes_the_plugin_fail_to_load(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_MAX_RECIPIENTS", value)

    registry = load_registry([taskq_email], use_entry_points=False)

    assert "EmailTask" not in registry
    [failure] = registry.failures
    assert f"EmailConfigError: invalid email settings: {message}" in failure.error


def test_body_and_html_limit_in_utf8_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_MAX_BODY_BYTES", "10")

    email_input(body="x" * 10, html="é" * 5)
    for fields, loc in [
        ({"body": "x" * 11}, ("body",)),
        ({"body": "é" * 6}, ("body",)),  # 6 characters, 12 bytes
        ({"html": "☕" * 4}, ("html",)),  # 4 characters, 12 bytes
    ]:
        with pytest.raises(ValidationError) as caught:
            email_input(**fields)
        [error] = caught.value.errors()
        assert error["loc"] == loc
        assert "at most 10 bytes in UTF-8 (TASKQ_EMAIL_MAX_BODY_BYTES)" in error["msg"]


def test_body_limit_defaults_to_one_mebibyte() -> None:
    mib = 1024 * 1024
    email_input(body="x" * mib, html="y" * mib)
    with pytest.raises(ValidationError, match="at most 1048576 bytes"):
        email_input(body="x" * (mib + 1))
    with pytest.raises(ValidationError, match="at most 1048576 bytes"):
        email_input(html="é" * (mib // 2 + 1))


def test_domain_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_ALLOWED_DOMAINS", " Example.com, *.corp.example ,")

    email_input(
        to=["Ada <ada@EXAMPLE.COM>", "b@sub.corp.example"],
        cc=["c@a.b.corp.example"],
        reply_to="someone@elsewhere.example",  # not a recipient
    )
    for fields, loc in [
        ({"to": ["ada@example.com", "x@evil.example"]}, ("to", 1)),
        ({"cc": ["x@corp.example"]}, ("cc", 0)),
        ({"bcc": ["x@example.com.evil.example"]}, ("bcc", 0)),
        ({"bcc": ["x@notexample.com"]}, ("bcc", 0)),
    ]:
        with pytest.raises(ValidationError) as caught:
            email_input(**fields)
        [error] = caught.value.errors()
        assert error["loc"] == loc
        assert "not allowed here (TASKQ_EMAIL_ALLOWED_DOMAINS" in error["msg"]


def test_allow_list_matches_international_domains_either_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_ALLOWED_DOMAINS", "xn--bcher-kva.example")
    email_input(to=["a@bücher.example", "b@XN--BCHER-KVA.example"])
    with pytest.raises(ValidationError, match="not allowed"):
        email_input(to=["a@bucher.example"])


def test_bad_allow_list_entry_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_EMAIL_ALLOWED_DOMAINS", "example.com,not a domain")
    with pytest.raises(EmailConfigError, match="'not a domain' is not a domain"):
        current_limits()


def test_stricter_worker_fails_the_task_for_good(
    monkeypatch: pytest.MonkeyPatch, smtp_server: ServerFactory
) -> None:
    # The API accepted these (its limits allowed them); this worker's limits do not.
    server = smtp_server()
    use_server(monkeypatch, server, max_recipients="1", allowed_domains="example.com")

    too_many = run_as_worker(
        {"to": ["a@example.com", "b@example.com"], "subject": "s", "body": "b"}
    )
    elsewhere = run_as_worker({"to": ["a@other.example"], "subject": "s", "body": "b"})

    assert too_many.error is not None
    assert too_many.error["permanent"] is True
    assert "at most 1 recipients" in too_many.error["message"]
    assert elsewhere.error is not None
    assert elsewhere.error["permanent"] is True
    assert "mail to other.example is not allowed" in elsewhere.error["message"]
    assert server.received == []


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


def test_international_domains_go_as_a_labels(smtp_server: ServerFactory) -> None:
    # No SMTPUTF8 needed (this server doesn't offer it), and the headers are valid everywhere.
    server = smtp_server(enable_SMTPUTF8=False)
    task = EmailTask(
        EmailSettings(smtp_host=server.host, smtp_port=server.port, from_address=SENDER)
    )

    output = task.run(
        email_input(to=["Zoë <zoe@Bücher.example>"], reply_to="help@straße.example"), CTX
    )

    assert output.recipients == ["zoe@xn--bcher-kva.example"]
    [got] = server.received
    assert got.rcpt_tos == ["zoe@xn--bcher-kva.example"]
    assert got.message["To"] == "Zoë <zoe@xn--bcher-kva.example>"
    assert got.message["Reply-To"] == "help@xn--strae-oqa.example"


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


def test_a_header_the_folder_would_break_is_refused() -> None:
    # Found by hypothesis: Python 3.11.7 folds this display name (long words, no place to
    # break) with empty lines, which would end the header section early. No control character
    # in it: only writing the header shows it.
    name = "=0Ahookimplęý+ds±ăò'YCW®ĭ¤SĪûĲ ĺ5.¹Ï0ßS:ķ]8Īĥ5ô'ÅYİß©ĢÁ¶;2ľÖĞ¾ŀ "
    escaped = json.dumps(name * 2)  # backslash escapes: long words with nowhere to break

    with pytest.raises(ValidationError) as caught:
        email_input(to=["dskiwlae@example.net", f"{escaped} <ffic@example.org>"])

    [error] = caught.value.errors()
    assert error["loc"] == ("to", 1)
    assert "cannot be written as one header field" in error["msg"]


@pytest.mark.parametrize("field", ["body", "html"])
def test_lone_surrogates_in_the_text_are_refused(field: str) -> None:
    # JSON may carry "\ud800"; the message could never be encoded, so no attempt could succeed.
    text = '{"to": ["a@example.com"], "subject": "s", "body": "b", "FIELD": "a\\ud800"}'
    with pytest.raises(ValidationError) as caught:
        EmailInput.model_validate(json.loads(text.replace("FIELD", field)))
    [error] = caught.value.errors()
    assert error["loc"] == (field,)
    assert "no lone surrogates" in error["msg"]
