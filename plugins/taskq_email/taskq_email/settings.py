"""SMTP settings, from `TASKQ_EMAIL_*` environment variables or `.env`."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskq_email.headers import EmailAddress

SMTP_PORT = 25
SUBMISSION_PORT = 587  # STARTTLS
SMTPS_PORT = 465  # implicit TLS


class EmailSettings(BaseSettings):
    """Where and how EmailTask delivers mail; read once when the task type is instantiated."""

    model_config = SettingsConfigDict(
        env_prefix="TASKQ_EMAIL_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    smtp_host: str = "localhost"
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    ssl: bool = False
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
        return self

    @property
    def port(self) -> int:
        """The configured port, or the usual one for the connection security chosen."""
        if self.smtp_port is not None:
            return self.smtp_port
        if self.ssl:
            return SMTPS_PORT
        return SUBMISSION_PORT if self.starttls else SMTP_PORT
