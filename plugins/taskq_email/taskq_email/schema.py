"""EmailTask's input and output models: the JSON a caller sends and the result it gets back."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from taskq_email.errors import EmailHeaderError
from taskq_email.headers import EmailAddress, HeaderText, domain_of, parse_address, plain
from taskq_email.limits import MAX_RECIPIENTS, current_limits

MAX_SUBJECT_LENGTH = 998  # characters; RFC 5322's line limit

__all__ = ["MAX_RECIPIENTS", "MAX_SUBJECT_LENGTH", "EmailInput", "EmailOutput"]


def _allowed_recipient(value: str) -> str:
    domain = domain_of(parse_address(value).addr_spec)
    if not current_limits().allows(domain):
        raise ValueError(
            f"mail to {domain} is not allowed here (TASKQ_EMAIL_ALLOWED_DOMAINS lists the "
            "domains this server sends to)"
        )
    return value


Recipient = Annotated[EmailAddress, AfterValidator(_allowed_recipient)]
"""An address mail goes to: to, cc or bcc (not reply_to), so the domain allow-list applies."""

_BODY_LIMIT = "at most TASKQ_EMAIL_MAX_BODY_BYTES (default 1 MiB) in UTF-8."


class EmailInput(BaseModel):
    """One message: text body, optional HTML alternative, To/Cc/Bcc recipients."""

    model_config = ConfigDict(extra="forbid")

    to: list[Recipient] = Field(
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description="Recipients: `ada@example.com` or `Ada Lovelace <ada@example.com>`.",
    )
    subject: HeaderText = Field(max_length=MAX_SUBJECT_LENGTH)
    body: str = Field(description=f"The plain-text body; {_BODY_LIMIT}")
    html: str | None = Field(
        default=None,
        description=f"An HTML version of the body, sent as an alternative part; {_BODY_LIMIT}",
    )
    cc: list[Recipient] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Recipient] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description="Recipients who get the message without appearing in its headers.",
    )
    reply_to: EmailAddress | None = None

    @field_validator("body", "html")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        if value is None:
            return value
        limit = current_limits().max_body_bytes
        size = len(value)  # a lower bound: each character is 1 to 4 bytes in UTF-8
        if size <= limit and not value.isascii():
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                # JSON's \ud800: the message could never be encoded, on any attempt.
                raise ValueError("must be valid Unicode text: no lone surrogates") from None
        if size > limit:
            raise ValueError(f"at most {limit} bytes in UTF-8 (TASKQ_EMAIL_MAX_BODY_BYTES)")
        return value

    @model_validator(mode="after")
    def _check_headers(self) -> Self:
        # Imported here: message.py builds from an EmailInput.
        from taskq_email.message import check_headers

        # Each value was folded alone, as a To header (or is plain): what remains are addresses
        # sharing a header, and Reply-To's longer name, which shifts where it folds.
        addresses = [*self.to, *self.cc, *([self.reply_to] if self.reply_to else [])]
        shared = len(self.to) > 1 or len(self.cc) > 1
        if all(plain(a) for a in addresses) or (
            not shared and (self.reply_to is None or plain(self.reply_to))
        ):
            return self  # nothing there for the email package to decode or fold badly
        try:
            check_headers(self.to, self.cc, self.reply_to, self.subject)
        except EmailHeaderError as exc:
            raise ValueError(f"the headers cannot be written as given: {exc}") from None
        return self

    @model_validator(mode="after")
    def _cap_recipients(self) -> Self:
        # The schema's per-list cap is static; the operator's limit may be lower.
        limit = current_limits().max_recipients
        total = len(self.to) + len(self.cc) + len(self.bcc)
        if total > limit:
            raise ValueError(
                f"at most {limit} recipients in to, cc and bcc together "
                "(TASKQ_EMAIL_MAX_RECIPIENTS)"
            )
        return self


class EmailOutput(BaseModel):
    """What the SMTP server accepted."""

    message_id: str = Field(description="The Message-ID header of the message sent.")
    recipients: list[str] = Field(description="Envelope recipients the server accepted.")
    refused: dict[str, str] = Field(
        default_factory=dict,
        description="Envelope recipients the server refused, with its reply; the others got it.",
    )
