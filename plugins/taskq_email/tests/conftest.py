"""Real SMTP servers (aiosmtpd) for the EmailTask tests, plain or TLS, on free loopback ports."""

from __future__ import annotations

import email
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from taskq_email.limits import current_limits

from tests.plugin_support import isolate_env, self_signed, server_context

HOST = "127.0.0.1"
USERNAME = "mailer"
PASSWORD = "s3cret-pa55"


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated: bool
    tls: bool


@dataclass
class Collector:
    """An aiosmtpd handler that keeps what it receives and refuses what it is told to."""

    refuse_rcpt: set[str] = field(default_factory=set)
    data_reply: str = "250 Message accepted for delivery"
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply.startswith("250"):
            assert isinstance(envelope.content, bytes)
            # CRLF on the wire, LF once stored: what a mailbox would hold.
            content = envelope.content.replace(b"\r\n", b"\n")
            message = email.message_from_bytes(content, policy=default_policy)
            assert isinstance(message, EmailMessage)
            self.received.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                    authenticated=bool(session.authenticated),
                    # session.ssl is set by STARTTLS; implicit TLS shows on the transport.
                    tls=server.transport is not None
                    and server.transport.get_extra_info("ssl_object") is not None,
                )
            )
        return self.data_reply


@dataclass
class Server:
    """A running test server and what it received."""

    host: str
    port: int
    handler: Collector

    @property
    def received(self) -> list[Received]:
        return self.handler.received


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    # handled=False: let aiosmtpd answer 535 itself (the default means "handler replied").
    return AuthResult(success=ok, handled=False)


def free_port(host: str = HOST) -> int:
    """A loopback port nothing listens on (for a moment)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_env(monkeypatch, tmp_path, "TASKQ_EMAIL_")
    # Read once per process in production; per test here, after the test sets its variables.
    current_limits.cache_clear()


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., Server]]:
    """Start SMTP servers: `smtp_server(refuse_rcpt=..., data_reply=..., auth=..., host=...,
    **SMTP_options)`.

    Extra options go to aiosmtpd's Controller and SMTP (tls_context, ssl_context, ...).
    """
    controllers: list[Controller] = []

    def start(
        *,
        refuse_rcpt: Iterable[str] = (),
        data_reply: str = "250 Message accepted for delivery",
        auth: bool = False,
        host: str = HOST,
        **options: Any,
    ) -> Server:
        handler = Collector(refuse_rcpt=set(refuse_rcpt), data_reply=data_reply)
        if auth:
            options["authenticator"] = authenticator
        port = free_port(host)
        controller = Controller(
            handler, hostname=host, port=port, server_hostname="smtp.test", **options
        )
        controller.start()
        controllers.append(controller)
        return Server(host=host, port=port, handler=handler)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    return self_signed(folder, "taskq-email test", "IP:127.0.0.1,DNS:localhost")


@pytest.fixture
def server_tls_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    return server_context(*tls_files)


@pytest.fixture
def trust_test_cert(monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path]) -> None:
    """Make the test certificate trusted, the way a user trusts a private CA: SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))


@pytest.fixture
def credentials() -> Credentials:
    """The only username and password the `auth=True` servers accept."""
    return Credentials(USERNAME, PASSWORD)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()
