"""Build the MIME message and its envelope from an EmailInput."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid

from taskq_email.headers import parse_address
from taskq_email.schema import EmailInput


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message ready for SMTP: the MIME message, MAIL FROM and the RCPT TO list."""

    message: EmailMessage
    sender: str
    recipients: list[str]

    @property
    def message_id(self) -> str:
        """The Message-ID header, angle brackets included."""
        return str(self.message["Message-ID"])


def build_envelope(data: EmailInput, sender: str, id_hint: str) -> Envelope:
    """Build the message; Bcc recipients go in the envelope only, never in a header."""
    from_ = parse_address(sender)
    to = [parse_address(a) for a in data.to]
    cc = [parse_address(a) for a in data.cc]
    bcc = [parse_address(a) for a in data.bcc]

    message = EmailMessage()
    message["From"] = from_
    message["To"] = to
    if cc:
        message["Cc"] = cc
    if data.reply_to is not None:
        message["Reply-To"] = parse_address(data.reply_to)
    message["Subject"] = data.subject
    message["Date"] = datetime.now(UTC)
    # The sender's domain rather than this host's name, which make_msgid would use (and leak).
    message["Message-ID"] = make_msgid(idstring=id_hint, domain=from_.domain)
    message.set_content(data.body)
    if data.html is not None:
        message.add_alternative(data.html, subtype="html")

    return Envelope(message=message, sender=from_.addr_spec, recipients=_unique(to + cc + bcc))


def _unique(addresses: list[Address]) -> list[str]:
    # An address listed twice (To and Bcc, say) is one RCPT TO, so one copy.
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address.addr_spec, None)
    return list(seen)
