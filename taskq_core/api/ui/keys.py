"""The dashboard's one door to API keys: `check` gives a key's owner and scopes, through the
API's own key ring (`taskq_core/api/auth.py`: `app.state.keyring`), so the dashboard and the
REST API accept the same keys with the same scopes, open mode included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fastapi import Request

READ = "read"
SUBMIT = "submit"
ADMIN = "admin"
ALL_SCOPES = frozenset({READ, SUBMIT, ADMIN})
OPEN_OWNER = "open"  # the owner the key ring names while no key exists (open mode)


class _Principal(Protocol):
    @property
    def owner(self) -> str: ...

    @property
    def scopes(self) -> frozenset[str]: ...


class _KeyRing(Protocol):
    async def authenticate(self, token: str | None) -> _Principal | None: ...


@dataclass(frozen=True)
class Holder:
    """Who a key belongs to, and what it may do."""

    owner: str
    scopes: frozenset[str]

    @property
    def open(self) -> bool:
        return self.owner == OPEN_OWNER


OPEN = Holder(OPEN_OWNER, ALL_SCOPES)


async def check(request: Request, key: str | None) -> Holder | None:
    """The holder of `key` (OPEN while the API runs without keys), or None for no valid key.

    Without a key ring on the app (an API built before auth existed) the API is open."""
    ring: _KeyRing | None = getattr(request.app.state, "keyring", None)
    if ring is None:
        return OPEN
    principal = await ring.authenticate(key or None)
    if principal is None:
        return None
    return Holder(principal.owner, frozenset(str(s) for s in principal.scopes))
