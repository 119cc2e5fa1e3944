"""The operator's limits on what a task may send: recipients, body size, recipient domains.

The API reads them when it validates a submitted input (so a breach is a 422 naming the field)
and the worker reads them again when the task runs (so a worker configured more strictly fails
the task at once, for good). Neither process reads the SMTP settings or the password for this.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from taskq_email.errors import EmailConfigError

MAX_RECIPIENTS = 100  # to + cc + bcc, per message: the ceiling the JSON Schema states
DEFAULT_MAX_RECIPIENTS = 50  # Amazon SES's and Postmark's per-message limit
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # for `body` and for `html`, each, in UTF-8
ENV_PREFIX = "TASKQ_EMAIL_"


class EmailLimits(BaseSettings):
    """`TASKQ_EMAIL_MAX_RECIPIENTS`, `TASKQ_EMAIL_MAX_BODY_BYTES`, `TASKQ_EMAIL_ALLOWED_DOMAINS`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    max_recipients: int = Field(default=DEFAULT_MAX_RECIPIENTS, ge=1, le=MAX_RECIPIENTS)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    # Comma-separated: `example.com` allows that domain, `*.example.com` its subdomains.
    allowed_domains: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("allowed_domains", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_domains")
    @classmethod
    def _normalize(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_normalize_entry(entry) for entry in value)

    def allows(self, domain: str) -> bool:
        """Whether mail may go to `domain` (normalized, as `headers.domain_of` returns it)."""
        if not self.allowed_domains:
            return True
        for entry in self.allowed_domains:
            if entry.startswith("*."):
                if domain.endswith(entry[1:]):
                    return True
            elif domain == entry:
                return True
        return False


def _normalize_entry(entry: str) -> str:
    # The same normalization as the addresses' (lowercase, IDNA A-labels), so they compare.
    # Here, not at import: compiling email-validator's patterns takes 30 ms of every start-up.
    from email_validator import EmailNotValidError, validate_email

    wildcard = entry.startswith("*.")
    bare = entry[2:] if wildcard else entry
    try:
        domain = validate_email(f"postmaster@{bare}", check_deliverability=False).ascii_domain
    except EmailNotValidError:
        raise ValueError(
            f"{entry!r} is not a domain (write example.com, or *.example.com for its subdomains)"
        ) from None
    return f"*.{domain}" if wildcard else domain


def settings_error_text(exc: ValidationError | SettingsError, aliases: dict[str, str]) -> str:
    """A settings error as field names and messages only: pydantic's own text echoes the
    input, which for EmailSettings holds the SMTP password."""
    if isinstance(exc, SettingsError):
        return "invalid email settings: could not read them from the environment or .env"
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        name = aliases.get(field, f"{ENV_PREFIX}{field.upper()}") if field else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {message}" if name else message)
    return "invalid email settings: " + "; ".join(parts)


@functools.cache
def current_limits() -> EmailLimits:
    """The limits, read once per process; EmailConfigError (a permanent failure) if invalid."""
    try:
        return EmailLimits()
    except (ValidationError, SettingsError) as exc:
        raise EmailConfigError(settings_error_text(exc, {})) from None
