"""Build the message's wire bytes and its envelope from an EmailInput, headers checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TYPE_CHECKING

from taskq_email.errors import EmailHeaderError
from taskq_email.headers import POLICY, check_folded, parse_address

if TYPE_CHECKING:
    from taskq_email.schema import EmailInput

# Every top-level header EmailTask writes; the ones set_content adds end the list.
HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message ready for SMTP: its bytes as sent, MAIL FROM and the RCPT TO list."""

    message_id: str  # angle brackets included
    data: bytes  # CRLF line ends throughout; the header section checked by `check_wire`
    sender: str
    recipients: list[str]


def build_envelope(data: EmailInput, sender: str, id_hint: str) -> Envelope:
    """Build the message; Bcc recipients go in the envelope only, never in a header.

    The input was validated, but this does not count on it: each header value is checked as
    it will be written, and the bytes produced are checked to hold no other header, so even an
    input that skipped validation cannot add a header or end the header section early.
    """
    from_ = _address("From", sender)
    to = [_address("To", a) for a in data.to]
    cc = [_address("Cc", a) for a in data.cc]
    bcc = [_address("Bcc", a) for a in data.bcc]
    reply_to = _address("Reply-To", data.reply_to) if data.reply_to is not None else None

    message = _with_headers(from_, to, cc, reply_to, data.subject)
    message["Date"] = datetime.now(UTC)
    # The sender's domain rather than this host's name, which make_msgid would use (and leak).
    message_id = make_msgid(idstring=id_hint, domain=from_.domain)
    _set(message, "Message-ID", message_id)
    message.set_content(data.body)
    if data.html is not None:
        message.add_alternative(data.html, subtype="html")

    # ASCII addresses (parse_address), so never SMTPUTF8 nor raw UTF-8 in a header: non-ASCII
    # text goes in encoded words.
    wire = message.as_bytes()
    check_wire(wire, expected=[name.lower() for name in message])  # iterating: header names
    return Envelope(
        message_id=message_id,
        data=wire,
        sender=from_.addr_spec,
        recipients=_unique(to + cc + bcc),
    )


def _with_headers(
    from_: Address,
    to: list[Address],
    cc: list[Address],
    reply_to: Address | None,
    subject: str,
    *,
    check_each: bool = True,
) -> EmailMessage:
    message = EmailMessage(policy=POLICY)
    put = _set if check_each else EmailMessage.__setitem__
    put(message, "From", from_)
    put(message, "To", to)
    if cc:
        put(message, "Cc", cc)
    if reply_to is not None:
        put(message, "Reply-To", reply_to)
    put(message, "Subject", subject)
    return message


def check_headers(to: list[str], cc: list[str], reply_to: str | None, subject: str) -> None:
    """Raise EmailHeaderError unless these headers are written as themselves and nothing more.

    The validation of an input: each value alone can fold cleanly yet not next to the others
    (the email package's folding has had bugs that emit an empty line mid-header).
    """
    message = _with_headers(
        parse_address("noreply@example.com"),
        [parse_address(a) for a in to],
        [parse_address(a) for a in cc],
        parse_address(reply_to) if reply_to is not None else None,
        subject,
        check_each=False,  # validation folded each value already; this checks them together
    )
    expected = [name.lower() for name in message]  # its header names
    check_wire(message.as_bytes() + b"\r\n", expected)


def _address(field: str, value: str) -> Address:
    try:
        return parse_address(value)
    except ValueError as exc:  # pydantic's errors are ValueErrors
        raise EmailHeaderError(f"refusing to write the {field} address: {exc}") from None


def _set(message: EmailMessage, name: str, value: str | Address | list[Address]) -> None:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    try:
        check_folded(name, text)
    except ValueError as exc:
        raise EmailHeaderError(f"refusing to write the {name} header: {exc}") from None
    message[name] = value


def check_wire(data: bytes, expected: list[str]) -> None:
    """Raise EmailHeaderError unless `data`'s header section holds exactly the `expected`
    header names, once each and all known, and the message has no line end but CRLF."""
    # A bare CR or LF: some servers take it as a line end (header injection, SMTP smuggling).
    bare = data.replace(b"\r\n", b"")
    if b"\r" in bare or b"\n" in bare:
        raise EmailHeaderError("refusing to send a message with a bare CR or LF")
    head = data.partition(b"\r\n\r\n")[0]
    names = [
        line.partition(b":")[0].decode("ascii", "replace").lower()
        for line in head.split(b"\r\n")
        if not line.startswith((b" ", b"\t"))
    ]
    unknown = sorted(set(names) - HEADERS)
    if names != expected or unknown or len(set(names)) != len(names):
        raise EmailHeaderError(
            f"refusing to send a message whose headers are {names} (expected {expected})"
        )


def _unique(addresses: list[Address]) -> list[str]:
    # An address listed twice (To and Bcc, say) is one RCPT TO, so one copy.
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address.addr_spec, None)
    return list(seen)
