"""Loopback ports for the servers: a free one, or the one a data dir used last time."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on now (a server may still lose it to a race: retry then)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers do: connections of a closed server in TIME_WAIT do not block a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def saved(path: Path, key: str) -> int | None:
    """The port saved under `key`, when it is free: warm restarts keep their URLs."""
    port = _load(path).get(key)
    return port if isinstance(port, int) and is_free(port) else None


def save(path: Path, key: str, port: int) -> None:
    ports = _load(path)
    ports[key] = port
    path.write_text(json.dumps(ports) + "\n")


def _load(path: Path) -> dict[str, object]:
    with contextlib.suppress(OSError, ValueError):
        ports = json.loads(path.read_text())
        if isinstance(ports, dict):
            return ports
    return {}
