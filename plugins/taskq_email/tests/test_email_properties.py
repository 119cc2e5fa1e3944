"""Hypothesis properties of EmailInput: no control character gets in, no header gets added."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from taskq_email import EmailHeaderError, EmailInput
from taskq_email.message import HEADERS, build_envelope

# Fixed seed and bounded examples: the same cases every run. The autouse fixture only clears
# the environment, so sharing it between examples is fine.
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Every character that ends a line somewhere, and the other controls.
CONTROLS = st.sampled_from(
    [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f", "\x85", "\u2028", "\u2029"]
)
# Text as a caller might send it, with encoded-word pieces mixed in to tempt the decoder.
PIECES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30),
    st.sampled_from(["=?utf-8?q?", "=?utf-8?b?", "?=", "=0D=0A", "=0A", "DQo=", ":", '"', " "]),
)
TEXT = st.lists(PIECES, max_size=8).map("".join)
LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True).filter(
    lambda s: ".." not in s and not s.endswith(".")
)
DOMAIN = st.sampled_from(["example.com", "mail.example.org", "bücher.example", "EXAMPLE.net"])
ADDR_SPEC = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
ADDRESS = st.one_of(
    ADDR_SPEC,
    st.builds(lambda name, addr: f"{json.dumps(name)} <{addr}>", TEXT, ADDR_SPEC),
    st.builds(lambda name, addr: f"{name} <{addr}>", TEXT, ADDR_SPEC),
)


def with_control(text: str, control: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + control + text[at:]


def validate(**fields: Any) -> EmailInput:
    data = {"to": ["ada@example.com"], "subject": "Hello", "body": "Hi.\n"} | fields
    return EmailInput.model_validate_json(json.dumps(data))


@PROPERTY
@given(TEXT, CONTROLS, st.integers(min_value=0))
def test_a_subject_with_a_control_character_is_refused(text: str, control: str, at: int) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(subject=with_control(text, control, at))
    assert {e["loc"] for e in caught.value.errors()} == {("subject",)}


@PROPERTY
@given(
    ADDRESS,
    CONTROLS,
    st.integers(min_value=0),
    st.sampled_from(["to", "cc", "bcc", "reply_to"]),
)
def test_an_address_with_a_control_character_is_refused(
    address: str, control: str, at: int, field: str
) -> None:
    bad = with_control(address, control, at)
    # Leading and trailing whitespace controls are stripped as an address is read.
    assume(bad.strip() != address.strip())
    value: Any = bad if field == "reply_to" else [bad]
    with pytest.raises(ValidationError) as caught:
        validate(**{field: value})
    locs = {e["loc"] for e in caught.value.errors()}
    assert locs == ({(field,)} if field == "reply_to" else {(field, 0)})


@PROPERTY
@given(
    subject=TEXT,
    to=st.lists(ADDRESS, min_size=1, max_size=3),
    cc=st.lists(ADDRESS, max_size=2),
    bcc=st.lists(ADDRESS, max_size=2),
    reply_to=st.none() | ADDRESS,
    body=st.text(max_size=200),
    html=st.none() | st.text(max_size=200),
)
def test_a_valid_message_has_only_its_own_headers(
    subject: str,
    to: list[str],
    cc: list[str],
    bcc: list[str],
    reply_to: str | None,
    body: str,
    html: str | None,
) -> None:
    try:
        data = validate(subject=subject, to=to, cc=cc, bcc=bcc, reply_to=reply_to, body=body,
                        html=html)  # fmt: skip
    except ValidationError:
        assume(False)
        return

    # Whatever validation accepts, the message builds, and its checks pass.
    try:
        envelope = build_envelope(data, "Taskq <noreply@example.com>", "taskq.1")
    except EmailHeaderError as exc:
        raise AssertionError(f"validated input refused when built: {exc}") from exc

    head = envelope.data.partition(b"\r\n\r\n")[0]
    names = [
        line.partition(b":")[0].decode().lower()
        for line in head.split(b"\r\n")
        if not line.startswith((b" ", b"\t"))
    ]
    expected = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}
    expected |= {"cc"} if cc else set()
    expected |= {"reply-to"} if reply_to is not None else set()
    assert set(names) - {"content-transfer-encoding"} == expected
    assert len(names) == len(set(names))
    assert set(names) <= HEADERS
    assert "bcc" not in names
