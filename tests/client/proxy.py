"""A real TCP proxy on 127.0.0.1 in front of the API, that misbehaves as told: drops a response
after the server sent it, or answers 503 itself before passing requests on."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 0\r\nconnection: close\r\ncontent-length: 43\r\n\r\n"
    b'{"detail": "PostgreSQL is unavailable now"}'
)


def _read_message(conn: socket.socket) -> bytes:
    """One HTTP/1.1 message's bytes: its head, and as much body as Content-Length says (every
    request the clients send and every answer the API gives here has one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@dataclass
class Proxy:
    upstream: tuple[str, int]
    drop_responses: int = 0  # the first N requests reach the API, their answers never return
    unavailable: int = 0  # the first N requests are answered 503 here, never reaching the API
    requests: list[bytes] = field(default_factory=list)  # every request seen, in order
    dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream) as up:
            while True:
                request = _read_message(conn)
                if not request:
                    return
                with self._lock:
                    self.requests.append(request)
                    refuse = self.unavailable > 0
                    drop = not refuse and self.drop_responses > 0
                    if refuse:
                        self.unavailable -= 1
                    elif drop:
                        self.drop_responses -= 1
                if refuse:
                    conn.sendall(UNAVAILABLE)
                    return
                up.sendall(request)
                response = _read_message(up)  # answered: the server has done the work
                if drop:
                    with self._lock:
                        self.dropped += 1
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                    return
                conn.sendall(response)
