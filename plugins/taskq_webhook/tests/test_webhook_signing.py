"""The v2 signature against replays: real deliveries to 127.0.0.1, captured and sent again changed.

An eavesdropper on a plain-http hop (or a log that kept a request) holds a signed request for up to
the replay window. Each test resends one, altered, with another HTTP client to the same receiver,
and checks that the README's `verify`, given what the receiver got, refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from readme_receiver import readme_example_message, readme_verify
from taskq_webhook import WebhookConfigError, WebhookOutput, WebhookTask
from taskq_webhook.signing import message_v2, signed_headers
from webhook_receiver import SECRET, Received, Receiver, Reply

Send = Callable[..., WebhookOutput]
KEY = SECRET.encode()
BODY = {"event": "export.ready", "id": 17}
SENT_BODY = b'{"event":"export.ready","id":17}'
TIMESTAMP, TASK_ID, SIGNATURE_V2, SIGNATURE_V1 = (
    "X-Taskq-Timestamp",
    "X-Taskq-Task-Id",
    "X-Taskq-Signature-V2",
    "X-Taskq-Signature",
)


def verify_v1(secret: bytes, headers: Any, body: bytes, now: float | None = None) -> bool:
    """0.1's README `verify`, as receivers copied it then (v1: timestamp and body only)."""
    try:
        timestamp = int(headers["X-Taskq-Timestamp"])
        version, _, received = headers["X-Taskq-Signature"].partition("=")
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    if version != "v1" or abs((time.time() if now is None else now) - timestamp) > 300:
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), received.encode())


def verified(request: Received, now: float | None = None) -> bool:
    """What a receiver running the README's `verify` decides about a request it got."""
    return readme_verify()(KEY, request.method, request.url, request.headers, request.body, now)


def replay(
    receiver: Receiver,
    captured: Received,
    *,
    method: str | None = None,
    target: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Received:
    """Send a captured request again, with `http.client`, changed as given; what arrived."""
    changes = headers or {}
    changed = {name.lower() for name in changes} | {"content-length"}
    sent = {name: value for name, value in captured.headers.items() if name.lower() not in changed}
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        connection.request(
            method or captured.method,
            target or captured.path,
            body=captured.body if body is None else body,
            headers=sent | changes,  # Host among them: http.client adds none of its own
        )
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    return receiver.received[-1]


def naive(request: Received) -> bytes:
    """The fields run together with nothing between them: what a shifted byte leaves unchanged."""
    fields = (request.headers[TIMESTAMP], request.headers[TASK_ID], request.method, request.url)
    return "".join(fields).encode() + request.body


@pytest.fixture
def captured(receiver: Receiver, send: Send) -> Received:
    """A default delivery of task 42, by its host name, as the receiver got it."""
    send({"url": receiver.url("/hook?token=abc", host="localhost"), "body": BODY})
    (request,) = receiver.received
    return request


def test_a_delivery_verifies_at_the_url_it_was_sent_to(
    receiver: Receiver, captured: Received
) -> None:
    assert captured.url == receiver.url("/hook?token=abc", host="localhost")
    assert captured.headers[TASK_ID] == "42"
    assert captured.body == SENT_BODY
    stamp = captured.headers[TIMESTAMP]
    message = message_v2(stamp, "42", "POST", captured.url, SENT_BODY)
    expected = "v2=" + hmac.new(KEY, message, hashlib.sha256).hexdigest()
    assert captured.headers[SIGNATURE_V2] == expected
    assert verified(captured)
    # v1 is sent only when configured, so a 0.1 receiver refuses this delivery.
    assert captured.headers[SIGNATURE_V1] is None
    assert not verify_v1(KEY, captured.headers, captured.body)


def test_the_same_request_replayed_unchanged_still_verifies(
    receiver: Receiver, captured: Received
) -> None:
    # The control for the replays below: within the window only the task id, deduplicated by
    # the receiver, stops this one; the signature is meant to let it through.
    again = replay(receiver, captured)
    assert again.url == captured.url
    assert verified(again)


# Each a replay the signature must refuse: (name, changes). `shift` ones move a byte from one
# field to the next, which fields run together (naive) would not notice.
REPLAYS: list[tuple[str, dict[str, Any]]] = [
    ("another task id", {"headers": {TASK_ID: "43"}}),
    ("another method", {"method": "PUT"}),
    ("another path", {"target": "/other?token=abc"}),
    ("another query", {"target": "/hook?token=abd"}),
    ("another host (origin) of the receiver", {"headers": {"Host": "127.0.0.1:{port}"}}),
    ("shift: URL's last byte to the body", {"target": "/hook?token=ab", "body": b"c" + SENT_BODY}),
    ("shift: timestamp's last digit to the task id", {"shift_timestamp": True}),
]


@pytest.mark.parametrize(("name", "changes"), REPLAYS, ids=[name for name, _ in REPLAYS])
def test_a_changed_replay_fails_verification(
    receiver: Receiver, captured: Received, name: str, changes: dict[str, Any]
) -> None:
    changes = dict(changes)
    headers = {k: v.format(port=receiver.port) for k, v in changes.pop("headers", {}).items()}
    if changes.pop("shift_timestamp", False):
        stamp = captured.headers[TIMESTAMP]
        headers = {TIMESTAMP: stamp[:-1], TASK_ID: stamp[-1] + captured.headers[TASK_ID]}
    replayed = replay(receiver, captured, headers=headers, **changes)
    assert replayed.body == changes.get("body", captured.body)
    if name.startswith("shift"):
        assert naive(replayed) == naive(captured)
    # `now` at the replay's own timestamp: the window is not what refuses it, the signature is.
    assert not verified(replayed, now=int(replayed.headers[TIMESTAMP]))


def test_each_redirect_hop_is_signed_for_its_own_url(receiver: Receiver, send: Send) -> None:
    final = receiver.url("/final?x=1", host="127.0.0.1")  # another origin, same server
    receiver.replies["/hook"] = Reply(status=307, headers={"Location": "/moved"})
    receiver.replies["/moved"] = Reply(status=308, headers={"Location": final})
    out = send({"url": receiver.url(host="localhost"), "method": "PUT", "body": BODY})
    assert out.url == final
    hops = receiver.received
    assert [hop.url for hop in hops] == [
        receiver.url("/hook", host="localhost"),
        receiver.url("/moved", host="localhost"),
        final,
    ]
    assert all(hop.method == "PUT" and hop.headers[TASK_ID] == "42" for hop in hops)
    assert all(verified(hop) for hop in hops)
    # A hop's signature is good at its own URL only: not where it was redirected from or to.
    verify = readme_verify()
    for hop in hops:
        for elsewhere in hops:
            if elsewhere is not hop:
                assert not verify(KEY, hop.method, elsewhere.url, hop.headers, hop.body)


def test_https_is_signed_as_https(tls_receiver: Receiver, send: Send) -> None:
    send({"url": tls_receiver.url(host="localhost"), "body": BODY})
    (got,) = tls_receiver.received
    assert got.url == f"https://localhost:{tls_receiver.port}/hook"
    assert verified(got)
    verify = readme_verify()
    assert not verify(KEY, got.method, "http" + got.url[5:], got.headers, got.body)


def test_v1_is_added_when_configured_and_a_0_1_receiver_still_verifies(
    receiver: Receiver, send: Send
) -> None:
    receiver.replies["/hook"] = Reply(status=307, headers={"Location": "/moved"})
    send(
        {"url": receiver.url(host="localhost"), "body": BODY},
        signature_versions="v1,v2",
    )
    assert len(receiver.received) == 2
    for got in receiver.received:
        stamp = got.headers[TIMESTAMP]
        v1 = hmac.new(KEY, f"{stamp}.".encode() + SENT_BODY, hashlib.sha256).hexdigest()
        assert got.headers[SIGNATURE_V1] == f"v1={v1}"  # byte for byte 0.1's header
        assert verify_v1(KEY, got.headers, got.body)
        assert verified(got)  # and the v2 receiver is served by the same request
    # Exactly why v2 exists: v1 passes a replay with another task id or to another endpoint.
    captured = receiver.received[-1]
    other = replay(receiver, captured, target="/elsewhere", headers={TASK_ID: "43"})
    assert verify_v1(KEY, other.headers, other.body)
    assert not verified(other)


@pytest.mark.parametrize(
    ("value", "versions"),
    [("v2", ("v2",)), ("v1,v2", ("v1", "v2")), (" v2 , v1 ", ("v1", "v2")), ("v2,v2", ("v2",))],
)
def test_signature_versions_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, versions: tuple[str, ...]
) -> None:
    monkeypatch.setenv("TASKQ_WEBHOOK_SECRET", SECRET)
    assert WebhookTask().settings.signature_versions == ("v2",)
    monkeypatch.setenv("TASKQ_WEBHOOK_SIGNATURE_VERSIONS", value)
    assert WebhookTask().settings.signature_versions == versions


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("v1", "v2 is always sent"),
        ("", "v2 is always sent"),
        ("v3", "unknown signature version 'v3'"),
        ("v2,sha1", "unknown signature version 'sha1'"),
        ("V2", "unknown signature version 'V2'"),
    ],
)
def test_invalid_signature_versions_are_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("TASKQ_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TASKQ_WEBHOOK_SIGNATURE_VERSIONS", value)
    with pytest.raises(WebhookConfigError, match="TASKQ_WEBHOOK_SIGNATURE_VERSIONS") as caught:
        WebhookTask()
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_readme_example_message_is_what_the_sender_signs() -> None:
    shown = readme_example_message()
    url, body = "http://localhost:8080/in?a=1", b'{"id":17}'
    assert shown == message_v2("1717171717", "42", "POST", url, body)
    headers = signed_headers(KEY, ("v2",), 1717171717, 42, "POST", url, body)
    assert headers[SIGNATURE_V2] == "v2=" + hmac.new(KEY, shown, hashlib.sha256).hexdigest()


# The properties: the sender (`signed_headers`) and the README's receiver agree on every request,
# and disagree once any covered field changes, or a byte moves between two of them.

FIELDS = ("timestamp", "task_id", "method", "url", "body")
timestamps = st.integers(10**9, 10**10 - 1).map(str)
task_ids = st.integers(1, 2**63 - 1).map(str)
methods = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=1, max_size=8)
urls = st.builds(
    "{}://{}{}".format,
    st.sampled_from(["http", "https"]),
    st.sampled_from(["hooks.example.com", "localhost:8080", "[::1]:9000", "xn--bcher-kva.ex"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(
        lambda tail: "/" + tail
    ),
)
requests = st.fixed_dictionaries(
    {
        "timestamp": timestamps,
        "task_id": task_ids,
        "method": st.sampled_from(["POST", "PUT", "PATCH"]),
        "url": urls,
        "body": st.binary(max_size=64),
    }
)
replacements = {
    "timestamp": timestamps,
    "task_id": task_ids | st.text(max_size=6),
    "method": methods,
    "url": urls | st.text(max_size=20),
    "body": st.binary(max_size=64),
}


def sign(request: dict[str, Any]) -> dict[str, str]:
    return signed_headers(
        KEY,
        ("v2",),
        int(request["timestamp"]),
        int(request["task_id"]),
        request["method"],
        request["url"],
        request["body"],
    )


def receiver_says(headers: dict[str, str], request: dict[str, Any]) -> bool:
    """The README's verify on this request's fields, at its own timestamp (inside the window)."""
    received = {**headers, TIMESTAMP: request["timestamp"], TASK_ID: request["task_id"]}
    verify = readme_verify()
    return verify(
        KEY, request["method"], request["url"], received, request["body"], int(request["timestamp"])
    )


@given(requests, st.data())
@settings(max_examples=300, deadline=None)
def test_any_change_to_a_covered_field_breaks_the_signature(
    request: dict[str, Any], data: st.DataObject
) -> None:
    headers = sign(request)
    assert receiver_says(headers, request)
    field = data.draw(st.sampled_from(FIELDS))
    value = data.draw(replacements[field].filter(lambda new: new != request[field]))
    assert not receiver_says(headers, {**request, field: value})


@given(requests, st.integers(0, len(FIELDS) - 2), st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_byte_moved_between_neighbouring_fields_breaks_the_signature(
    request: dict[str, Any], left: int, forward: bool
) -> None:
    headers = sign(request)
    first, second = FIELDS[left], FIELDS[left + 1]
    a, b = request[first], request[second]
    if second == "body":  # the URL's bytes run into the body's
        a = a.encode()
    assume(a if forward else b)  # something to move
    a, b = (a[:-1], a[-1:] + b) if forward else (a + b[:1], b[1:])
    if second == "body":
        assume(a.isascii())  # a URL on the wire is ASCII: a body byte joining it must be too
        a = a.decode()
    assert not receiver_says(headers, {**request, first: a, second: b})
