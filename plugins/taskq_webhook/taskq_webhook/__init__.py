"""taskq plugin providing WebhookTask, which delivers signed HTTP requests to public URLs.

httpx is imported inside the functions that send, never at a module's top: every worker and its
runners' fork server load this plugin before their first task, and importing httpx (which brings
its command line, rich and click, whenever those are installed) would double their start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from taskq_core import hookimpl
from taskq_webhook.errors import (
    WebhookConfigError,
    WebhookError,
    WebhookRefusedError,
    WebhookRejectedError,
)
from taskq_webhook.schema import WebhookInput, WebhookOutput
from taskq_webhook.settings import WebhookSettings
from taskq_webhook.task import WebhookTask

__all__ = [
    "WebhookConfigError",
    "WebhookError",
    "WebhookInput",
    "WebhookOutput",
    "WebhookRefusedError",
    "WebhookRejectedError",
    "WebhookSettings",
    "WebhookTask",
    "register_task_types",
]


@hookimpl
def register_task_types(register: Callable[[type], None]) -> None:
    """Register WebhookTask."""
    register(WebhookTask)
