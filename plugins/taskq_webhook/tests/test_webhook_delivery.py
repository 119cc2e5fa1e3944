"""WebhookTask against a real receiver on 127.0.0.1: what arrives, signatures, retries, caps."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib.metadata import entry_points
from typing import Any

import pytest
from readme_receiver import readme_verify
from taskq_webhook import (
    WebhookConfigError,
    WebhookRejectedError,
    WebhookSettings,
    WebhookTask,
    register_task_types,
)
from webhook_receiver import SECRET, Receiver, Reply, Send

from taskq_core import PermanentError, Retry


def test_a_delivery_arrives_exactly_and_its_signature_verifies(
    receiver: Receiver, send: Send, allow_loopback: None
) -> None:
    body = {"tags": ["a", None, 1.5], "id": 17, "name": "Zoë ✓", "event": "export.ready"}
    out = send(
        {
            "url": receiver.url("/hook?token=abc"),
            "method": "PATCH",
            "headers": {"Authorization": "Bearer t0k3n", "X-Custom": "a b\tc"},
            "body": body,
        }
    )
    (got,) = receiver.received
    assert got.method == "PATCH"
    assert got.path == "/hook?token=abc"
    assert got.headers["Authorization"] == "Bearer t0k3n"
    assert got.headers["X-Custom"] == "a b\tc"
    assert got.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Taskq-Task-Id"] == "42"
    assert json.loads(got.body) == body
    # Compact, UTF-8, keys sorted.
    sent = '{"event":"export.ready","id":17,"name":"Zoë ✓","tags":["a",null,1.5]}'
    assert got.body == sent.encode()

    assert got.url == receiver.url("/hook?token=abc")

    verify = readme_verify()
    key = SECRET.encode()
    assert verify(key, got.method, got.url, got.headers, got.body)
    # The same check refuses a changed body, another key, and a replay outside the window.
    assert not verify(key, got.method, got.url, got.headers, got.body + b" ")
    assert not verify(b"another-secret-0123456789", got.method, got.url, got.headers, got.body)
    stamp = int(got.headers["X-Taskq-Timestamp"])
    assert not verify(key, got.method, got.url, got.headers, got.body, now=stamp + 301)
    assert verify(key, got.method, got.url, got.headers, got.body, now=stamp + 299)
    assert not verify(key, got.method, got.url, got.headers, got.body, now=stamp - 301)
    # Forged or missing headers are a False, never an exception (a 500 at the receiver).
    signature = got.headers["X-Taskq-Signature-V2"]
    whole = dict(got.headers)
    for missing in ["X-Taskq-Timestamp", "X-Taskq-Task-Id", "X-Taskq-Signature-V2"]:
        partial = {name: value for name, value in whole.items() if name != missing}
        assert not verify(key, got.method, got.url, partial, got.body)
    for bad in ["v2=é", "v1=" + signature[3:], "", "v2", "v2=" + "0" * 64, signature.upper()]:
        forged = {**whole, "X-Taskq-Signature-V2": bad}
        assert not verify(key, got.method, got.url, forged, got.body)
    for name, bad in [
        ("X-Taskq-Timestamp", "soon"),
        ("X-Taskq-Timestamp", ""),
        ("X-Taskq-Task-Id", "é"),
    ]:
        assert not verify(key, got.method, got.url, {**whole, name: bad}, got.body)
    # By default v2 alone: no v1, which a replay with another task id or URL would pass.
    assert got.headers["X-Taskq-Signature"] is None

    assert out.status_code == 200
    assert out.reason == "OK"
    assert out.body == '{"ok": true}'
    assert out.body_bytes == len(b'{"ok": true}')
    assert not out.truncated
    assert out.headers["content-type"] == "application/json"
    assert out.url == receiver.url("/hook?token=abc")
    assert out.elapsed_ms >= 0


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_null_body_is_an_empty_signed_body(
    receiver: Receiver, send: Send, allow_loopback: None, method: str
) -> None:
    send({"url": receiver.url(), "method": method, "headers": {"Content-Type": "text/plain"}})
    (got,) = receiver.received
    assert got.method == method
    assert got.body == b""
    assert got.headers["Content-Type"] == "text/plain"  # the caller's, not ours
    assert readme_verify()(SECRET.encode(), method, got.url, got.headers, b"")


def test_a_host_name_is_sent_as_host_while_the_checked_address_is_used(
    receiver: Receiver, send: Send
) -> None:
    # `localhost` resolves to 127.0.0.1 here (/etc/hosts), which the allow-list opens.
    out = send({"url": receiver.url(host="localhost")})
    assert out.status_code == 200
    assert receiver.received[0].headers["Host"] == f"localhost:{receiver.port}"


def test_an_ipv6_address_is_reached_when_allowed(receiver6: Receiver, send: Send) -> None:
    out = send({"url": receiver6.url(host="[::1]"), "body": 6}, allowed="::1/128", unchecked=True)
    assert out.status_code == 200
    (got,) = receiver6.received
    assert got.headers["Host"] == f"[::1]:{receiver6.port}"
    assert got.body == b"6"


def test_the_name_is_resolved_once_per_request(
    receiver: Receiver, send: Send, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding needs a second lookup (check one answer, connect to another): count the
    # real resolver's calls for the name; the connection itself must use the checked address.
    looked_up: list[object] = []
    real = socket.getaddrinfo

    def counting(host: object, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    receiver.replies["/hook"] = Reply(status=307, headers={"Location": "/next"})
    send({"url": receiver.url(host="localhost")})
    assert [r.path for r in receiver.received] == ["/hook", "/next"]
    # Once per request (the redirect's included), and never again by the HTTP library.
    assert looked_up == ["localhost", "localhost"]


def test_https_checks_the_certificate_against_the_host_name_not_the_address(
    tls_receiver: Receiver, send: Send
) -> None:
    # The certificate names `localhost` only; the connection goes to 127.0.0.1.
    out = send({"url": tls_receiver.url(host="localhost"), "body": [1]})
    assert out.status_code == 200
    assert tls_receiver.server_names == ["localhost"]
    assert tls_receiver.received[0].body == b"[1]"


def test_https_to_a_name_the_certificate_does_not_cover_is_retried(
    tls_receiver: Receiver, send: Send, allow_loopback: None
) -> None:
    with pytest.raises(Retry, match="certificate"):
        send({"url": tls_receiver.url(host="127.0.0.1")})
    assert tls_receiver.received == []


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(receiver: Receiver, send: Send, status: int) -> None:
    receiver.replies["/hook"] = Reply(status=status, body=b"down")
    with pytest.raises(Retry) as caught:
        send({"url": receiver.url(host="localhost")}, attempt=2)
    assert f"answered {status}" in str(caught.value)
    # No Retry-After: the back-off of attempt 2, base 5 s: uniform in [0, 10].
    assert 0 <= caught.value.after <= 10


def test_429_honours_retry_after_seconds(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(status=429, headers={"Retry-After": "7"})
    with pytest.raises(Retry) as caught:
        send({"url": receiver.url(host="localhost")})
    assert caught.value.after == 7


def test_retry_after_as_an_http_date_and_its_bound(receiver: Receiver, send: Send) -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    receiver.replies["/hook"] = Reply(status=503, headers={"Retry-After": soon})
    with pytest.raises(Retry) as caught:
        send({"url": receiver.url(host="localhost")})
    assert 60 < caught.value.after <= 120

    receiver.replies["/hook"] = Reply(status=429, headers={"Retry-After": "86400"})
    with pytest.raises(Retry) as caught:
        send({"url": receiver.url(host="localhost")}, max_retry_after_seconds=90)
    assert caught.value.after == 90


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_other_client_errors_fail_at_once(receiver: Receiver, send: Send, status: int) -> None:
    receiver.replies["/hook"] = Reply(status=status, body=b'{"error": "no such hook"}')
    with pytest.raises(WebhookRejectedError, match=f"answered {status}.*no such hook") as caught:
        send({"url": receiver.url(host="localhost")})
    assert isinstance(caught.value, PermanentError)


def test_a_receiver_that_never_answers_is_a_retried_timeout(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(hang=True)
    with pytest.raises(Retry, match="ReadTimeout"):
        send({"url": receiver.url(host="localhost")}, read_timeout_seconds=0.2)


def test_the_total_timeout_bounds_an_attempt(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(hang=True)
    with pytest.raises(Retry, match=r"within 0\.3s in all"):
        send({"url": receiver.url(host="localhost")}, total_timeout_seconds=0.3)


def test_a_closed_port_is_a_retried_connection_error(receiver: Receiver, send: Send) -> None:
    port = receiver.port
    receiver.port = 1  # nothing listens on port 1 of loopback
    with pytest.raises(Retry, match="ConnectError"):
        send({"url": receiver.url(host="localhost")})
    receiver.port = port


def test_a_name_that_does_not_resolve_is_retried(send: Send) -> None:
    # .invalid never resolves (RFC 2606); DNS may be down only for a while, hence a retry.
    with pytest.raises(Retry, match=r"could not resolve hook\.invalid"):
        send({"url": "https://hook.invalid/in"})


def test_the_last_attempt_does_not_promise_a_retry(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(status=500)
    with pytest.raises(Retry) as caught:
        send({"url": receiver.url(host="localhost")}, attempt=5)  # of 5
    assert (
        str(caught.value) == f"http://localhost:{receiver.port} answered 500 Internal Server Error"
    )


def test_an_endless_response_is_cut_at_the_cap(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(headers={"Content-Type": "text/plain"}, endless=True)
    out = send({"url": receiver.url(host="localhost")}, max_response_bytes=1000)
    assert out.truncated
    assert out.body_bytes == 1000
    assert out.body == "x" * 1000
    # The worker dropped the connection: the receiver's next write failed.
    assert receiver.cut.wait(10)


def test_a_body_at_the_cap_is_whole(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(body=b"y" * 1000)
    out = send({"url": receiver.url(host="localhost")}, max_response_bytes=1000)
    assert (out.truncated, out.body_bytes) == (False, 1000)


def test_307_and_308_are_followed_and_signed_again(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(status=307, headers={"Location": "/moved"})
    receiver.replies["/moved"] = Reply(status=308, headers={"Location": "/final"})
    out = send({"url": receiver.url(host="localhost"), "body": {"a": 1}})
    assert [r.path for r in receiver.received] == ["/hook", "/moved", "/final"]
    assert all(r.method == "POST" and r.body == b'{"a":1}' for r in receiver.received)
    verify = readme_verify()
    assert all(
        verify(SECRET.encode(), r.method, r.url, r.headers, r.body) for r in receiver.received
    )
    assert out.url == receiver.url("/final", host="localhost")
    assert out.redirects == [receiver.url(host="localhost"), receiver.url("/moved", "localhost")]


def test_credentials_are_not_sent_to_another_origin(receiver: Receiver, send: Send) -> None:
    other = receiver.url("/final", host="127.0.0.1")  # same server, another origin
    receiver.replies["/hook"] = Reply(status=307, headers={"Location": other})
    send(
        {
            "url": receiver.url(host="localhost"),
            "headers": {"Authorization": "Bearer t", "Cookie": "s=1", "X-Keep": "1"},
        }
    )
    first, second = receiver.received
    assert first.headers["Authorization"] == "Bearer t"
    assert second.headers["Authorization"] is None
    assert second.headers["Cookie"] is None
    assert second.headers["X-Keep"] == "1"


def test_redirect_limit_and_other_3xx_fail(receiver: Receiver, send: Send) -> None:
    receiver.replies["/hook"] = Reply(status=307, headers={"Location": "/hook"})
    with pytest.raises(WebhookRejectedError, match="307"):
        send({"url": receiver.url(host="localhost")}, max_redirects=2)
    assert len(receiver.received) == 3

    receiver.replies["/hook"] = Reply(status=302, headers={"Location": "/elsewhere"})
    with pytest.raises(WebhookRejectedError, match=r"302.*only 307 and 308"):
        send({"url": receiver.url(host="localhost")})


def test_the_secret_is_required_and_never_shown(
    receiver: Receiver, send: Send, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WebhookConfigError, match="set TASKQ_WEBHOOK_SECRET"):
        send({"url": receiver.url(host="localhost")}, secret=None)
    with pytest.raises(WebhookConfigError, match="too short") as caught:
        send({"url": receiver.url(host="localhost")}, secret="short-key")
    assert "short-key" not in str(caught.value)
    assert receiver.received == []

    # An invalid setting next to the secret: the error names the setting, never the secret.
    monkeypatch.setenv("TASKQ_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TASKQ_WEBHOOK_MAX_REDIRECTS", "many")
    with pytest.raises(WebhookConfigError, match="TASKQ_WEBHOOK_MAX_REDIRECTS") as caught:
        WebhookTask()
    assert SECRET not in str(caught.value)
    assert "many" not in str(caught.value)

    monkeypatch.delenv("TASKQ_WEBHOOK_MAX_REDIRECTS")
    settings = WebhookSettings()
    assert settings.signing_key == SECRET.encode()
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


def test_the_secret_is_not_logged(
    receiver: Receiver, send: Send, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        send({"url": receiver.url(host="localhost")})
    assert "POST http://localhost" in caplog.text, "the delivery logs a line"
    assert all(SECRET not in record.getMessage() for record in caplog.records)


def test_registers_through_hook_and_entry_point() -> None:
    seen: list[type] = []
    register_task_types(seen.append)
    assert seen == [WebhookTask]
    names = {ep.name: ep.value for ep in entry_points(group="taskq.tasks")}
    assert names.get("webhook") == "taskq_webhook"
