"""The recording HTTP(S) receiver behind the `receiver` fixtures, the test secret, and the type
of the `send` fixture (tests import them from here: a `from conftest import` finds whichever
plugin's conftest was imported first)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskq_webhook import WebhookOutput

SECRET = "test-secret-0123456789abcdef"
LOOPBACK = "127.0.0.0/8"
CHUNK = b"x" * 16384
Send = Callable[..., WebhookOutput]


@dataclass
class Reply:
    """What the receiver answers on a path."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes = b'{"ok": true}'
    hang: bool = False  # answer nothing until the test ends
    endless: bool = False  # a body that never ends (no Content-Length; HTTP/1.0 style)


@dataclass
class Received:
    """One request as the receiver read it."""

    method: str
    path: str  # the request target as received: path and query, undecoded
    headers: Message
    body: bytes
    url: str  # where the request came, rebuilt as the README says: scheme, Host, target


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        receiver = self.server.receiver
        url = f"{receiver.scheme}://{self.headers['Host']}{self.path}"
        receiver.received.append(Received(self.command, self.path, self.headers, body, url))
        reply = receiver.replies.get(self.path.split("?", 1)[0], Reply())
        if reply.hang:
            receiver.released.wait(60)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.endless:
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while not receiver.released.is_set():
                    self.wfile.write(CHUNK)
            except OSError:  # the client stopped reading and closed: what the test wants
                receiver.cut.set()
            return
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_POST = do_PUT = do_PATCH = do_GET = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class Receiver:
    """A running receiver: its base URLs, the replies per path, and what it received."""

    port: int
    scheme: str
    replies: dict[str, Reply] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    cut: threading.Event = field(default_factory=threading.Event)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI, as sent

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


@contextlib.contextmanager
def serving(tls: ssl.SSLContext | None, host: str = "127.0.0.1") -> Iterator[Receiver]:
    """Serve on `host` (127.0.0.1 or ::1), port chosen by the system, in a daemon thread, until
    the block ends (hanging and endless replies are released then)."""
    server = (_Server6 if ":" in host else _Server)((host, 0), _Handler)
    receiver = Receiver(port=server.server_address[1], scheme="https" if tls else "http")
    if tls is not None:

        def record_sni(sock: Any, name: str | None, context: Any) -> None:
            receiver.server_names.append(name)

        tls.sni_callback = record_sni
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.receiver = receiver
    # A short poll: shutdown() waits for it, once per test.
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()
