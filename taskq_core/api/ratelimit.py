"""The optional rate limit: requests per client per window, counted in Redis, 429 beyond it.

`TASKQ_RATE_LIMIT` ("100/s", "6000/min", "100000/hour") turns it on. The count lives in Redis
(`Broker.count_request`, one round trip), so every API replica shares it. Who "a client" is, is
the `identify` function the middleware is built with: by default `key_or_address`, the API key's
owner when the request carries a valid key (checked through api/auth.py's cache, so it costs a
hash and a dict lookup), else the client's address: unknown keys cannot buy fresh counts, and
while the API is open (no key exists) every client is its address.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from taskq_core.api import errors
from taskq_core.api.auth import OPEN, KeyRing, authorization_token
from taskq_core.errors import ConfigurationError

OPEN_PATHS = frozenset({"/health", "/ready"})  # probes are never limited
WINDOWS = {
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hour": 3600,
}  # fmt: skip
_RATE = re.compile(r"^\s*([0-9]+)\s*/\s*([a-z]+)\s*$")

Identify = Callable[[Scope], Awaitable[str]]


@dataclass(frozen=True)
class Rate:
    limit: int  # requests
    window: int  # seconds


def parse_rate(text: str) -> Rate:
    """ "100/s" -> Rate(100, 1); ConfigurationError naming the setting when malformed."""
    match = _RATE.match(text.lower())
    if match is None or match.group(2) not in WINDOWS or int(match.group(1)) < 1:
        raise ConfigurationError(
            f"TASKQ_RATE_LIMIT={text!r} is not a rate: write e.g. 100/s, 6000/min or 100000/hour"
        )
    return Rate(int(match.group(1)), WINDOWS[match.group(2)])


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:unknown"


async def key_or_address(scope: Scope) -> str:
    """The identity a request is counted under: its valid API key's owner, else its address."""
    token = authorization_token(dict(scope["headers"]).get(b"authorization"))
    if token is not None:
        ring: KeyRing = scope["app"].state.keyring
        try:
            principal = await ring.authenticate(token)
        except Exception:  # the keys cannot be read: the route will answer that (503)
            principal = None
        if principal is not None and principal is not OPEN:
            return principal.owner
    return client_address(scope)


class RateLimit:
    """Install outside the routes and the fast path, inside the body-size limit (so a refused
    request's body has been read: its client hears the 429)."""

    def __init__(self, app: ASGIApp, rate: Rate, identify: Identify = key_or_address) -> None:
        self.app = app
        self.rate = rate
        self.identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        broker = scope["app"].state.backends.broker
        try:
            identity = await self.identify(scope)
            wait = await broker.count_request(identity, self.rate.limit, self.rate.window)
        except Exception as exc:
            # Fails closed: without its count the limit cannot hold, so Redis down is a 503.
            handler = errors.handler_for(exc)
            if handler is None:
                raise
            response = await handler(Request(scope), exc)
            await response(scope, receive, send)
            return
        if wait is None:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, math.ceil(wait)))
        detail = (
            f"rate limit of {self.rate.limit} requests per {self.rate.window}s exceeded; "
            f"retry after {retry_after}s"
        )
        refusal = errors.AsciiJSONResponse(
            {"detail": detail}, status_code=429, headers={"Retry-After": retry_after}
        )
        await refusal(scope, receive, send)
