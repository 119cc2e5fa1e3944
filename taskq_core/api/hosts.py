"""While the API runs open (no key exists), it answers only requests addressed to it by an IP
address or a loopback name.

An open API on loopback is reachable from any web page the developer visits, by DNS rebinding:
the page's own name is made to resolve to 127.0.0.1, and the browser then sends requests with
`Host: attacker.example` that the same-origin policy lets the page read. A Host that is an IP
literal or `localhost` cannot be such a name. With keys, the key is the defence and any Host is
served.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from taskq_core.api.errors import AsciiJSONResponse

OPEN_PATHS = frozenset({"/health", "/ready"})  # probes, open in every mode: they tell nothing
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
REFUSAL = (
    "this API runs without keys, so it answers only requests addressed to an IP address or "
    "localhost (a defence against DNS rebinding): use one, or create an API key"
)


def acceptable(host_header: str) -> bool:
    """True when `host_header` (a Host value, with or without a port) names no DNS name but a
    loopback one."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class OpenModeHosts:
    """ASGI middleware: refuse (403) a request to a DNS name while the key ring says open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            keyring = getattr(scope["app"].state, "keyring", None)
            if keyring is not None and keyring.open:
                host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
                if host and not acceptable(host):
                    refusal = AsciiJSONResponse({"detail": REFUSAL}, status_code=403)
                    await refusal(scope, receive, send)
                    return
        await self.app(scope, receive, send)
