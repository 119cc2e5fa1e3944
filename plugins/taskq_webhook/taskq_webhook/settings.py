"""Webhook settings, from `TASKQ_WEBHOOK_*` environment variables or `.env`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from taskq_webhook.addresses import IPNetwork, parse_networks
from taskq_webhook.errors import WebhookConfigError
from taskq_webhook.signing import VERSIONS

MIN_SECRET_LENGTH = 16  # characters; a shorter HMAC key is guessable offline from one delivery


class NetworkSettings(BaseSettings):
    """The allow-list alone: what the input model needs to judge a literal address at submit."""

    model_config = SettingsConfigDict(env_prefix="TASKQ_WEBHOOK_", env_file=".env", extra="ignore")

    allowed_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated CIDRs a webhook may reach although the SSRF policy refuses "
        "them (intranets, tests); empty by default.",
    )

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return parse_networks(value) if isinstance(value, str) else value


class WebhookSettings(NetworkSettings):
    """How WebhookTask signs and sends; read once when the task type is instantiated."""

    # No validator on the secret, and none at model level: a pydantic error echoes the input
    # it judged, and must never echo this. `signing_key` checks it with a message of our own.
    secret: SecretStr | None = None
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    total_timeout_seconds: float = Field(default=30.0, gt=0)
    max_response_bytes: int = Field(default=64 * 1024, ge=0)
    max_redirects: int = Field(default=3, ge=0, le=10)
    max_retry_after_seconds: float = Field(default=3600.0, ge=0)
    user_agent: str = "taskq-webhook/0.2"
    signature_versions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("v2",),
        description="Comma-separated signature versions to send: `v2` (the default), or "
        "`v1,v2` while some receivers still verify 0.1's v1 (README: Upgrading from 0.1).",
    )

    @field_validator("signature_versions", mode="before")
    @classmethod
    def _versions(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return tuple(part.strip() for part in value.split(",") if part.strip())

    @field_validator("signature_versions")
    @classmethod
    def _known_versions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [version for version in value if version not in VERSIONS]
        if unknown:
            raise ValueError(f"unknown signature version {unknown[0]!r}: use v2, or v1,v2")
        # v2 on every delivery: a receiver that has moved to it can count on it, and never
        # needs to fall back to v1 (which a replayed request would then exploit).
        if "v2" not in value:
            raise ValueError("v2 is always sent: use v2, or v1,v2 while receivers migrate")
        return tuple(version for version in VERSIONS if version in value)

    @property
    def signing_key(self) -> bytes:
        """The secret as HMAC key bytes; a clear error (never showing it) when unusable."""
        if self.secret is None:
            raise WebhookConfigError("no signing secret configured: set TASKQ_WEBHOOK_SECRET")
        key = self.secret.get_secret_value()
        if len(key) < MIN_SECRET_LENGTH:
            raise WebhookConfigError(
                f"TASKQ_WEBHOOK_SECRET is too short: use at least {MIN_SECRET_LENGTH} random "
                "characters (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return key.encode()


def load_settings() -> WebhookSettings:
    """Read the settings; an invalid one is a WebhookConfigError naming it, without its value."""
    try:
        return WebhookSettings()
    except ValidationError as exc:
        raise WebhookConfigError(f"invalid webhook settings: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """A ValidationError's messages with field names but without the values judged."""
    return "; ".join(
        f"TASKQ_WEBHOOK_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )
