"""EmailTask's input and output models: the JSON a caller sends and the result it gets back."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskq_email.headers import EmailAddress, HeaderText

MAX_RECIPIENTS = 100  # to + cc + bcc, per message
MAX_SUBJECT_LENGTH = 998  # characters; RFC 5322's line limit


class EmailInput(BaseModel):
    """One message: text body, optional HTML alternative, To/Cc/Bcc recipients."""

    model_config = ConfigDict(extra="forbid")

    to: list[EmailAddress] = Field(
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description="Recipients: `ada@example.com` or `Ada Lovelace <ada@example.com>`.",
    )
    subject: HeaderText = Field(max_length=MAX_SUBJECT_LENGTH)
    body: str = Field(description="The plain-text body.")
    html: str | None = Field(
        default=None, description="An HTML version of the body, sent as an alternative part."
    )
    cc: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[EmailAddress] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description="Recipients who get the message without appearing in its headers.",
    )
    reply_to: EmailAddress | None = None

    @model_validator(mode="after")
    def _cap_recipients(self) -> Self:
        total = len(self.to) + len(self.cc) + len(self.bcc)
        if total > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together")
        return self


class EmailOutput(BaseModel):
    """What the SMTP server accepted."""

    message_id: str = Field(description="The Message-ID header of the message sent.")
    recipients: list[str] = Field(description="Envelope recipients the server accepted.")
    refused: dict[str, str] = Field(
        default_factory=dict,
        description="Envelope recipients the server refused, with its reply; the others got it.",
    )
