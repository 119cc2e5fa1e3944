"""EmailTask's headers: no injection through control characters, encoded words or folding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from email_helpers import CTX, SENDER, ServerFactory, email_input, unchecked_input
from pydantic import ValidationError
from taskq_email import (
    EmailConfigError,
    EmailDeliveryError,
    EmailError,
    EmailHeaderError,
    EmailInput,
    EmailSettings,
    EmailTask,
)
from taskq_email.message import build_envelope, check_wire

from taskq_core import PermanentError

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
        {"to": ["ada@example.com\r\nBcc: evil@x.com"]},
        {"bcc": ["not an address"]},
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


def test_which_errors_are_permanent() -> None:
    assert isinstance(EmailHeaderError("x"), EmailError)
    assert isinstance(EmailHeaderError("x"), PermanentError)
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
