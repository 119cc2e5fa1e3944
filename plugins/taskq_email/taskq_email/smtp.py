"""SMTP delivery: one connection per message, SMTP errors turned into EmailDeliveryError."""

from __future__ import annotations

import smtplib
import ssl

from taskq_email.errors import EmailDeliveryError
from taskq_email.message import Envelope
from taskq_email.settings import EmailSettings


def deliver(settings: EmailSettings, envelope: Envelope) -> dict[str, str]:
    """Send the message; return the recipients the server refused (raise if it took none)."""
    where = f"{settings.smtp_host}:{settings.port}"
    try:
        # A fresh connection per message: simple, and correct across worker threads.
        # Pooling connections per worker could come later if throughput calls for it.
        connection = _connect(settings)
    except smtplib.SMTPAuthenticationError as exc:
        raise EmailDeliveryError(
            f"SMTP authentication as {settings.username!r} failed at {where}: {_reply(exc)}"
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise EmailDeliveryError(f"SMTP server at {where}: {_reply(exc)}") from exc
    except (smtplib.SMTPException, OSError) as exc:  # refused, timeout, TLS handshake, DNS...
        raise EmailDeliveryError(
            f"could not connect to SMTP server at {where}: {_reply(exc)}{_defaults(settings)}"
        ) from exc

    try:
        # The checked bytes themselves: send_message would generate them a second time.
        refused = connection.sendmail(envelope.sender, envelope.recipients, envelope.data)
    except smtplib.SMTPRecipientsRefused as exc:
        reasons = "; ".join(f"{rcpt}: {_reply(err)}" for rcpt, err in exc.recipients.items())
        raise EmailDeliveryError(
            f"SMTP server at {where} refused every recipient ({reasons})"
        ) from exc
    except smtplib.SMTPSenderRefused as exc:
        raise EmailDeliveryError(
            f"SMTP server at {where} refused sender {envelope.sender}: {_reply(exc)}"
        ) from exc
    except smtplib.SMTPDataError as exc:
        raise EmailDeliveryError(
            f"SMTP server at {where} refused the message: {_reply(exc)}"
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise EmailDeliveryError(
            f"sending through SMTP server at {where} failed: {_reply(exc)}"
        ) from exc
    finally:
        _close(connection)
    return {rcpt: _reply(err) for rcpt, err in refused.items()}


def _connect(settings: EmailSettings) -> smtplib.SMTP:
    # The default context verifies the certificate and host name, always; a private CA is
    # trusted through TASKQ_EMAIL_TLS_CA_FILE (or the standard SSL_CERT_FILE variable).
    context = ssl.create_default_context()
    if settings.tls_ca_file is not None:
        context.load_verify_locations(cafile=settings.tls_ca_file)
    host, port, timeout = settings.smtp_host, settings.port, settings.timeout_seconds
    connection = (
        smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        if settings.ssl
        else smtplib.SMTP(host, port, timeout=timeout)
    )
    try:
        if settings.starttls:
            connection.starttls(context=context)
        if settings.username and settings.password is not None:
            connection.login(settings.username, settings.password.get_secret_value())
    except BaseException:
        _close(connection)
        raise
    return connection


def _defaults(settings: EmailSettings) -> str:
    """Which of the server's settings were left unset, so a first run without configuration
    says what to set rather than only that localhost:25 refused."""
    unset = [
        variable
        for field, variable in (
            ("smtp_host", "TASKQ_EMAIL_SMTP_HOST"),
            ("smtp_port", "TASKQ_EMAIL_SMTP_PORT"),
        )
        if field not in settings.model_fields_set
    ]
    if not unset:
        return ""
    verb = "is" if len(unset) == 1 else "are"
    return f" ({' and '.join(unset)} {verb} not set: the default was tried)"


def _close(connection: smtplib.SMTP) -> None:
    # Once DATA is accepted the message is on its way: a failed QUIT must not fail the task,
    # or a retry would send it twice.
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


def _reply(error: object) -> str:
    """Format an SMTP reply (an exception or smtplib's (code, bytes) pair) or any other error."""
    if isinstance(error, smtplib.SMTPResponseException):
        code, text = error.smtp_code, error.smtp_error
    elif isinstance(error, tuple) and len(error) == 2:
        code, text = error
    else:
        return str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}"
