"""A network namespace for one worker of the chaos run, whose link to the servers can be cut.

The namespace reaches PostgreSQL and Redis (which listen on 127.0.0.1 only) through a veth pair
on a private /30 made here, and a small forwarder on the host end. Cutting takes the host end of
the pair down: the worker's packets vanish (no reset, no error), as in a real partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from urllib.parse import urlsplit, urlunsplit

SUBNET = "10.213.77"  # a /30 of our own: .1 the host end, .2 the namespace end
BUFFER = 64 * 1024


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Netns:
    """Created on enter, removed on exit (removing the namespace removes the pair too)."""

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.name = f"tqchaos{tag}"
        self.host_if, self.ns_if = f"tqc{tag}h", f"tqc{tag}n"
        self.host_ip, self.ns_ip = f"{SUBNET}.1", f"{SUBNET}.2"
        self.cut = False

    def __enter__(self) -> Netns:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            inside = ("netns", "exec", self.name, "ip")
            _ip(*inside, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            _ip(*inside, "link", "set", self.ns_if, "up")
            _ip(*inside, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.host_if)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.name)

    def prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def url(self, url: str) -> str:
        """`url` (to 127.0.0.1) as seen from inside the namespace."""
        parts = urlsplit(url)
        netloc = parts.netloc.replace("127.0.0.1", self.host_ip).replace("localhost", self.host_ip)
        return urlunsplit(parts._replace(netloc=netloc))

    def set_cut(self, cut: bool) -> None:
        _ip("link", "set", self.host_if, "down" if cut else "up")
        self.cut = cut


class Forwarder:
    """Forwards the host end's `ports` to the same ports on 127.0.0.1, in a thread of its own."""

    def __init__(self, host: str, ports: list[int]) -> None:
        self.host, self.ports = host, ports
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Forwarder:
        self.thread.start()
        for port in self.ports:
            asyncio.run_coroutine_threadsafe(self._listen(port), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _listen(self, port: int) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        await asyncio.start_server(accept, self.host, port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
