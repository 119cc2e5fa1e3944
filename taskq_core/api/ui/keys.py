"""The dashboard's one door to API keys: the API's own key ring (`api/auth.py`,
`app.state.keyring`), so the dashboard and the REST API accept the same keys with the same scopes,
open mode included; sessions remember a key's digest, never the key."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from taskq_core.api.auth import KeyRing, Principal
from taskq_core.db.keys import Scope, digest

READ = Scope.READ.value
SUBMIT = Scope.SUBMIT.value
ADMIN = Scope.ADMIN.value
ALL_SCOPES = frozenset(s.value for s in Scope)
OPEN_OWNER = "open"  # the owner the key ring names while no key exists (open mode)


@dataclass(frozen=True)
class Holder:
    """Who a key belongs to, what it may do, and its digest (what a session keeps)."""

    owner: str
    scopes: frozenset[str]
    key_hash: str | None = None

    @property
    def open(self) -> bool:
        return self.owner == OPEN_OWNER


def _ring(request: Request) -> KeyRing:
    ring: KeyRing = request.app.state.keyring
    return ring


def _holder(principal: Principal | None, key_hash: str | None) -> Holder | None:
    if principal is None:
        return None
    return Holder(principal.owner, frozenset(s.value for s in principal.scopes), key_hash)


async def check(request: Request, key: str | None) -> Holder | None:
    """The holder of `key` (OPEN's while the API runs without keys), or None for no valid key."""
    principal = await _ring(request).authenticate(key or None)
    return _holder(principal, digest(key) if key else None)


async def recheck(request: Request, key_hash: str) -> Holder | None:
    """A logged-in session's key as it stands now: None once it is revoked."""
    return _holder(await _ring(request).by_digest(key_hash), key_hash)
