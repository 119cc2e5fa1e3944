"""The errors EmailTask raises; the host records their message as the task's error."""

from __future__ import annotations


class EmailError(Exception):
    """The email could not be sent."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class EmailConfigError(EmailError):
    """The email settings are incomplete."""


class EmailDeliveryError(EmailError):
    """The SMTP server did not accept the message."""
