"""The errors WebhookTask raises; each is permanent (retrying cannot fix it), so the task fails."""

from __future__ import annotations

from taskq_core import PermanentError


class WebhookError(PermanentError):
    """The webhook could not be delivered."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class WebhookConfigError(WebhookError):
    """The webhook settings are incomplete or invalid."""


class WebhookRefusedError(WebhookError):
    """The target address is refused by the SSRF policy."""


class WebhookRejectedError(WebhookError):
    """The receiver answered with a client error (4xx other than 429) or a redirect not followed."""
