"""`taskq api` bounds what clients can hold: connections past the limit get an immediate 503,
an idle keep-alive connection is closed, an oversized request head is refused."""

from __future__ import annotations

import socket

import httpx

from tests.conftest import Processes, Servers, free_port, taskq, wait_for


def _start_api(processes: Processes, servers: Servers, **env: str) -> int:
    port = free_port()
    proc = processes.spawn(taskq("api", "--port", str(port)), servers.env(**env), "api")

    def up() -> bool:
        assert proc.poll() is None, processes.output()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the API to start")
    return port


def _head(port: int, extra: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        return sock.recv(65536)


def test_connections_past_the_limit_are_answered_503_at_once(
    servers: Servers, processes: Processes
) -> None:
    port = _start_api(processes, servers, TASKQ_API_MAX_CONNECTIONS="3")
    # Slow clients: connected, a request head begun and never finished.
    holders = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
    try:
        for sock in holders:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert _head(port).startswith(b"HTTP/1.1 503")
    finally:
        for sock in holders:
            sock.close()
    wait_for(lambda: _head(port).startswith(b"HTTP/1.1 200"), what="the slots to free up")


def test_an_idle_keep_alive_connection_is_closed(servers: Servers, processes: Processes) -> None:
    port = _start_api(processes, servers, TASKQ_API_KEEP_ALIVE_SECONDS="1")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b'{"status":"ok"}' not in received:
            received += sock.recv(65536)
        # Then nothing more is sent: the server closes the connection (recv returns b"") well
        # before the socket's own 30 s timeout would raise.
        assert sock.recv(65536) == b""


def test_an_oversized_request_head_is_refused_with_h11(
    servers: Servers, processes: Processes
) -> None:
    port = _start_api(processes, servers, TASKQ_API_HTTP="h11")
    assert _head(port, "X-Fine: " + "x" * 8_000 + "\r\n").startswith(b"HTTP/1.1 200")
    answer = _head(port, "X-Big: " + "x" * 200_000 + "\r\n")
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
