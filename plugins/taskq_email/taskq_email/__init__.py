"""taskq plugin providing EmailTask, which sends email over SMTP."""

from __future__ import annotations

from collections.abc import Callable

from taskq_core import hookimpl
from taskq_email.errors import (
    EmailConfigError,
    EmailDeliveryError,
    EmailError,
    EmailHeaderError,
)
from taskq_email.limits import EmailLimits, current_limits
from taskq_email.schema import EmailInput, EmailOutput
from taskq_email.settings import EmailSettings
from taskq_email.task import EmailTask

__all__ = [
    "EmailConfigError",
    "EmailDeliveryError",
    "EmailError",
    "EmailHeaderError",
    "EmailInput",
    "EmailLimits",
    "EmailOutput",
    "EmailSettings",
    "EmailTask",
    "register_task_types",
]


@hookimpl
def register_task_types(register: Callable[[type], None]) -> None:
    """Register EmailTask, once its limits read well (else the plugin fails to load, saying why)."""
    # The API validates inputs against the limits: read them now rather than fail a request.
    current_limits()
    register(EmailTask)
