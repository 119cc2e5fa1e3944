"""The errors EmailTask raises; the host records their message as the task's error."""

from __future__ import annotations

from taskq_core import PermanentError


class EmailError(Exception):
    """The email could not be sent."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class EmailConfigError(EmailError, PermanentError):
    """The email settings are incomplete or invalid."""


class EmailHeaderError(EmailError, PermanentError):
    """The message would carry a header other than the ones EmailTask writes."""


class EmailDeliveryError(EmailError):
    """The SMTP server did not accept the message."""
