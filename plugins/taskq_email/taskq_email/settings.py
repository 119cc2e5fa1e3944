"""SMTP settings, from `TASKQ_EMAIL_*` environment variables or `.env`."""

from __future__ import annotations

from typing import Self

from pydantic import Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from taskq_email.errors import EmailConfigError
from taskq_email.headers import EmailAddress
from taskq_email.limits import ENV_PREFIX, settings_error_text

SMTP_PORT = 25
SUBMISSION_PORT = 587  # STARTTLS
SMTPS_PORT = 465  # implicit TLS

# Field names whose variable is not TASKQ_EMAIL_<FIELD>.
_VARIABLES = {"from_address": f"{ENV_PREFIX}FROM"}


class EmailSettings(BaseSettings):
    """Where and how EmailTask delivers mail; read once when the task type is instantiated."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        # pydantic's error text quotes the input, which holds the password.
        hide_input_in_errors=True,
    )

    smtp_host: str = "localhost"
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    ssl: bool = False
    # Log in over a connection without TLS: only for a relay on the same host or a network the
    # operator trusts, as the password crosses it readable.
    allow_plaintext_login: bool = False
    # A PEM file of CA certificates trusted for the SMTP server, besides the system's: a private
    # CA without SSL_CERT_FILE, which would replace the trust store of the whole worker.
    tls_ca_file: FilePath | None = None
    # `from` is a keyword, hence the field name; the variable is TASKQ_EMAIL_FROM.
    from_address: EmailAddress | None = Field(default=None, validation_alias="TASKQ_EMAIL_FROM")
    timeout_seconds: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.starttls and self.ssl:
            raise ValueError(
                "TASKQ_EMAIL_STARTTLS and TASKQ_EMAIL_SSL are exclusive: use SSL for implicit "
                "TLS (usually port 465) or STARTTLS to upgrade a plain connection (usually 587)"
            )
        if self.username and self.password is None:
            raise ValueError("TASKQ_EMAIL_PASSWORD is required when TASKQ_EMAIL_USERNAME is set")
        if self.password is not None and not self.username:
            raise ValueError("TASKQ_EMAIL_USERNAME is required when TASKQ_EMAIL_PASSWORD is set")
        if self.username and not (self.starttls or self.ssl) and not self.allow_plaintext_login:
            raise ValueError(
                "refusing to log in without TLS: TASKQ_EMAIL_USERNAME is set but neither "
                "TASKQ_EMAIL_STARTTLS nor TASKQ_EMAIL_SSL, so the password would cross the "
                "network readable; turn one of them on, or set "
                "TASKQ_EMAIL_ALLOW_PLAINTEXT_LOGIN=true for a relay you trust (on localhost)"
            )
        return self

    @property
    def port(self) -> int:
        """The configured port, or the usual one for the connection security chosen."""
        if self.smtp_port is not None:
            return self.smtp_port
        if self.ssl:
            return SMTPS_PORT
        return SUBMISSION_PORT if self.starttls else SMTP_PORT


def load_settings() -> EmailSettings:
    """Read the settings; EmailConfigError naming the variables, and never quoting a value."""
    try:
        return EmailSettings()
    except (ValidationError, SettingsError) as exc:
        # `from None`: the original's text (input included) must not reach the traceback either.
        raise EmailConfigError(settings_error_text(exc, _VARIABLES)) from None
