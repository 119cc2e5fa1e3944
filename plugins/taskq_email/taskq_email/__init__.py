"""taskq plugin providing EmailTask, which sends email over SMTP."""

from __future__ import annotations

from collections.abc import Callable

from taskq_core import hookimpl
from taskq_email.errors import EmailConfigError, EmailDeliveryError, EmailError
from taskq_email.schema import EmailInput, EmailOutput
from taskq_email.settings import EmailSettings
from taskq_email.task import EmailTask

__all__ = [
    "EmailConfigError",
    "EmailDeliveryError",
    "EmailError",
    "EmailInput",
    "EmailOutput",
    "EmailSettings",
    "EmailTask",
    "register_task_types",
]


@hookimpl
def register_task_types(register: Callable[[type], None]) -> None:
    """Register EmailTask."""
    register(EmailTask)
