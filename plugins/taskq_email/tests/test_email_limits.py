"""EmailTask's limits: recipients, body size, the recipient-domain allow-list; submit and worker."""

from __future__ import annotations

import pytest
import taskq_email
from email_helpers import ServerFactory, email_input, run_as_worker, use_server
from pydantic import ValidationError
from taskq_email import EmailConfigError, EmailInput
from taskq_email.limits import current_limits

from taskq_core.plugins import load_registry

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
