"""EmailTask: the task type that sends one email over SMTP."""

from __future__ import annotations

import logging

from taskq_core import Task, TaskContext
from taskq_email.errors import EmailConfigError
from taskq_email.message import build_envelope
from taskq_email.schema import EmailInput, EmailOutput
from taskq_email.settings import EmailSettings, load_settings
from taskq_email.smtp import deliver

logger = logging.getLogger(__name__)


class EmailTask(Task):
    """Send an email (text, optional HTML alternative, cc and bcc) through the configured SMTP."""

    name = "EmailTask"
    description = "Send an email over SMTP: text body, optional HTML alternative, cc and bcc."
    Input = EmailInput
    Output = EmailOutput

    def __init__(self, settings: EmailSettings | None = None) -> None:
        # The host instantiates with no arguments: settings come from TASKQ_EMAIL_* and `.env`.
        # Invalid ones raise EmailConfigError, which fails the task for good and names the
        # variables without quoting any value (the password among them).
        self.settings = settings if settings is not None else load_settings()

    def run(self, data: EmailInput, ctx: TaskContext) -> EmailOutput:
        """Build the message and hand it to the SMTP server."""
        if self.settings.from_address is None:
            raise EmailConfigError("no sender configured: set TASKQ_EMAIL_FROM")
        # The task id in the Message-ID ties a received message (and any duplicate from a
        # retry after a lost reply) back to its task.
        envelope = build_envelope(data, self.settings.from_address, id_hint=f"taskq.{ctx.task_id}")
        refused = deliver(self.settings, envelope)
        accepted = [rcpt for rcpt in envelope.recipients if rcpt not in refused]
        logger.info(
            "task %s: sent %s to %d recipient(s), %d refused",
            ctx.task_id,
            envelope.message_id,
            len(accepted),
            len(refused),
        )
        return EmailOutput(message_id=envelope.message_id, recipients=accepted, refused=refused)
