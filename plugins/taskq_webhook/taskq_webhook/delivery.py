"""Sending: resolve once, check, connect to the checked address, read a capped answer."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskq_webhook.addresses import IPAddress, IPNetwork, literal_address, refusal
from taskq_webhook.errors import WebhookRefusedError
from taskq_webhook.settings import WebhookSettings

if TYPE_CHECKING:
    import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Answer:
    """A response as read: status, headers, and at most the capped number of body bytes."""

    status_code: int
    reason: str
    headers: httpx.Headers
    body: bytes
    truncated: bool


def origin(url: httpx.URL) -> str:
    """`scheme://host[:port]`: what errors and logs name (paths and queries may hold tokens)."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def sent_url(url: httpx.URL) -> str:
    """The URL as `exchange` puts it on the wire: scheme, `Host` header, request target.

    What v2 signs: the receiver rebuilds it from what it got (its scheme, the `Host` header, the
    path and query undecoded), so it must be these bytes, not the URL as the caller spelled it
    (a `#fragment` is never sent, and httpx percent-encodes what the caller left raw).
    """
    return f"{url.scheme}://{_host(url)}{url.raw_path.decode('ascii')}"


def _host(url: httpx.URL) -> str:
    return url.netloc.decode("ascii")


async def pin(url: httpx.URL, allowed: tuple[IPNetwork, ...]) -> IPAddress:
    """Resolve the URL's host once, refuse it if any address is refused, return one to use.

    The caller connects to exactly this address: a second lookup (by the HTTP library) could
    answer differently (DNS rebinding) and reach what the check refused.
    """
    host = url.raw_host.decode("ascii")
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        port = url.port or DEFAULT_PORTS[url.scheme]
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = list(dict.fromkeys(_address(str(info[4][0])) for info in infos))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            shown = host if literal is not None else f"{host} (resolves to {address})"
            raise WebhookRefusedError(
                f"refused to send to {shown}: {reason} address "
                "(an operator can allow it with TASKQ_WEBHOOK_ALLOWED_NETWORKS)"
            )
    return addresses[0]


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


def tls_context() -> ssl.SSLContext:
    """OpenSSL's default context: the system's CAs, or `SSL_CERT_FILE` for a private CA.

    Made once per task instance: loading the CAs takes tens of milliseconds of CPU, which would
    otherwise stall the worker's event loop at every delivery.
    """
    return ssl.create_default_context()


def make_client(settings: WebhookSettings, tls: ssl.SSLContext) -> httpx.AsyncClient:
    """A client that follows no redirect itself, ignores proxy variables and reuses nothing.

    A proxy would resolve the host again on its side, out of reach of the check. A kept-alive
    connection is keyed by IP address, so a later request to another host name on the same
    address could ride a TLS session whose certificate was checked for the first name.
    """
    import httpx  # here, not at the top: see the package's docstring

    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        verify=tls,
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.read_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        ),
        # identity: the cap counts bytes on the wire, and a small compressed answer cannot
        # inflate into gigabytes in the worker.
        headers={"User-Agent": settings.user_agent, "Accept-Encoding": "identity"},
    )


async def exchange(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    address: IPAddress,
    headers: Mapping[str, str],
    body: bytes,
    max_bytes: int,
) -> Answer:
    """Send to `address` as if to `url`: same Host header, TLS server name and certificate check."""
    host = url.raw_host.decode("ascii")
    extensions: dict[str, str] = {}
    if url.scheme == "https" and literal_address(host) is None:
        # The connection goes to the IP, but TLS must present and verify the host name.
        extensions["sni_hostname"] = host
    target = url.copy_with(host=str(address))
    request_headers = {"Host": _host(url), **headers}
    async with client.stream(
        method, target, headers=request_headers, content=body, extensions=extensions
    ) as response:
        chunks: list[bytes] = []
        size, truncated = 0, False
        # Raw bytes, counted as they come: past the cap, stop reading and drop the connection.
        async for chunk in response.aiter_raw():
            room = max_bytes - size
            if len(chunk) > room:
                chunks.append(chunk[:room])
                size, truncated = max_bytes, True
                break
            chunks.append(chunk)
            size += len(chunk)
        return Answer(
            status_code=response.status_code,
            reason=response.reason_phrase,
            headers=response.headers,
            body=b"".join(chunks),
            truncated=truncated,
        )
