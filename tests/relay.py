"""A TCP relay on 127.0.0.1 in front of a real server, that can be stopped and started again on the
same port: while it is stopped, connections are refused and those open are cut, as clients see a
server that went away."""

from __future__ import annotations

import contextlib
import functools
import socket
import threading


class Relay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._server: socket.socket | None = None
        self.port = 0
        self.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again) on the relay's port."""
        server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port
        self.port = server.getsockname()[1]
        with self._lock:
            self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, in both directions."""
        with self._lock:
            server, self._server = self._server, None
            sockets, self._open = self._open, set()
        if server is not None:
            server.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            ends = threading.Barrier(2, action=functools.partial(self._forget, client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, ends), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, ends: threading.Barrier) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # cut by stop(), or the other side closed
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with contextlib.suppress(threading.BrokenBarrierError):
            ends.wait()  # the second direction to end closes the pair

    def _forget(self, *pair: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(pair)
        for sock in pair:
            sock.close()
