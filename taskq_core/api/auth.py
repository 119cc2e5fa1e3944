"""Who is calling: API keys checked against an in-process cache, and the `require` dependency.

Usage in a route (this is the one way routes are protected; /openapi.json then shows the bearer
scheme on each of them):

    from taskq_core.api.auth import AUTH_RESPONSES, Principal, Scope, require

    @router.get("/things", responses=AUTH_RESPONSES)
    async def things(principal: Annotated[Principal, require(Scope.READ)]) -> ...: ...

or, when the route does not need to know who called, `dependencies=[require(Scope.ADMIN)]`.
A route about one task that submit keys may follow takes `require(Scope.READ, Scope.SUBMIT)` and
calls `check_reader(principal, row["submitted_by"])`.
`require(a, b)` lets in a key with either scope; admin keys pass every check. Code below FastAPI
(api/fastpath.py) calls `KeyRing.authenticate` directly with the `Authorization` header's value.

Open mode: while no key exists at all (none in `api_keys`, revoked ones included, and none in
TASKQ_API_KEYS) every request passes as the principal `open`, with every scope: a fresh
`taskq dev` on loopback works without ceremony. The first `taskq keys create` ends it within the
cache's expiry, for good: revoking every key locks the API rather than opening it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.api.responses import documented
from taskq_core.db import keys
from taskq_core.db.keys import Scope
from taskq_core.errors import ConfigurationError
from taskq_core.settings import Settings

__all__ = [
    "AUTH_RESPONSES",
    "KeyRing",
    "Principal",
    "Scope",
    "authorization_token",
    "check_reader",
    "env_keys",
    "forbidden",
    "require",
]

log = logging.getLogger("taskq.api.auth")

CACHE_SECONDS = 5.0  # how long a key check trusts its snapshot: a revoked key works this long
# An unknown key reloads the keys if they are older than this, so a key just created works at
# once; guessing can cost PostgreSQL at most one small SELECT per second per API process.
MISS_RELOAD_SECONDS = 1.0
TOUCH_SECONDS = 60.0  # a key's last_used_at is written at most this often
MIN_ENV_KEY_LENGTH = 20  # characters; shorter secrets in TASKQ_API_KEYS are refused at start


@dataclass(frozen=True)
class Principal:
    """The caller: `owner` is stable across restarts and names its tasks' `submitted_by`."""

    owner: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes


OPEN = Principal("open", frozenset(Scope))
EVERY_SCOPE = frozenset(Scope)


def env_keys(settings: Settings) -> list[str]:
    """The keys of TASKQ_API_KEYS; ConfigurationError for one too short to be a secret."""
    found = [k.strip() for k in settings.api_keys.get_secret_value().split(",") if k.strip()]
    for number, key in enumerate(found, 1):
        if len(key) < MIN_ENV_KEY_LENGTH:
            raise ConfigurationError(
                f"TASKQ_API_KEYS: key {number} is shorter than {MIN_ENV_KEY_LENGTH} characters; "
                "use a long random one (`taskq keys create` prints one)"
            )
    return found


@dataclass(frozen=True)
class _Snapshot:
    by_hash: dict[str, Principal]
    stored: frozenset[str]  # hashes of keys from the table (their use is recorded)
    open: bool
    loaded_at: float = field(default_factory=time.monotonic)


class KeyRing:
    """Every usable key of this process, reloaded from PostgreSQL when older than `ttl`.

    A request costs a SHA-256 and a dict lookup. At most one request per `ttl` waits for the
    reload (one SELECT of the whole, small table; concurrent requests share it); an unknown key
    triggers one too, at most once per MISS_RELOAD_SECONDS, so a new key works at once while
    guessing cannot load the database. `last_used_at` is written in the background, at most
    every `touch_every` seconds per key.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        env: Sequence[str] = (),
        *,
        ttl: float = CACHE_SECONDS,
        touch_every: float = TOUCH_SECONDS,
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.touch_every = touch_every
        # A stable owner per configured key that does not reveal it: part of its hash.
        self._env = {
            keys.digest(k): Principal(f"env:{keys.digest(k)[:16]}", EVERY_SCOPE) for k in env
        }
        self._snapshot: _Snapshot | None = None
        self._loading: asyncio.Task[_Snapshot] | None = None
        self._touched: dict[str, float] = {}
        self._unwritten: dict[str, datetime] = {}
        self._writer: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        """Open mode as last read (False until the keys were read once)."""
        return self._snapshot is not None and self._snapshot.open

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal of `token` (OPEN in open mode), or None for a missing or unknown key."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.loaded_at >= self.ttl:
            snapshot = await self._reload()
        if snapshot.open:
            return OPEN
        if token is None:
            return None
        key_hash = keys.digest(token)
        principal = snapshot.by_hash.get(key_hash)
        if principal is None and time.monotonic() - snapshot.loaded_at >= MISS_RELOAD_SECONDS:
            snapshot = await self._reload()
            principal = snapshot.by_hash.get(key_hash)
        if principal is not None and key_hash in snapshot.stored:
            self._used(key_hash)
        return principal

    async def by_digest(self, key_hash: str) -> Principal | None:
        """Like `authenticate`, from the key's SHA-256 (`db.keys.digest`) instead of the key: the
        dashboard's session cookie keeps the digest, never the key, and looks it up on every
        request, so revoking a key ends its sessions within the cache's expiry."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.loaded_at >= self.ttl:
            snapshot = await self._reload()
        if snapshot.open:
            return OPEN
        return snapshot.by_hash.get(key_hash)

    async def start(self) -> None:
        """Read the keys once at start-up, so the log says at once whether the API is open."""
        try:
            await self._reload()
        except Exception as exc:  # the API starts without PostgreSQL; requests retry the read
            log.warning("could not read the API keys yet: %s", type(exc).__name__)

    async def close(self) -> None:
        """Write what is left of `last_used_at` and stop."""
        for task in (self._loading, self._writer):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        await self._write_used()

    async def _reload(self) -> _Snapshot:
        if self._loading is None:
            self._loading = asyncio.create_task(self._load(), name="api-keys-reload")
        # Shielded: a request whose client went away must not cancel everyone's reload.
        return await asyncio.shield(self._loading)

    async def _load(self) -> _Snapshot:
        try:
            table = await keys.load(self.engine)
        finally:
            self._loading = None
        by_hash = dict(self._env)
        for key in table.active:
            by_hash[key.key_hash] = Principal(f"key:{key.name}", frozenset(key.scopes))
        snapshot = _Snapshot(
            by_hash,
            frozenset(k.key_hash for k in table.active),
            open=not table.any_created and not self._env,
        )
        previous = self._snapshot
        if previous is None or previous.open != snapshot.open:
            if snapshot.open:
                log.warning(
                    "no API key exists: the API is OPEN to anyone who can reach it "
                    "(create one with `taskq keys create --scope admin`)"
                )
            else:
                log.info("API keys exist: every request but /health and /ready needs one")
        self._snapshot = snapshot
        return snapshot

    def _used(self, key_hash: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key_hash, -self.touch_every) < self.touch_every:
            return
        self._touched[key_hash] = now
        self._unwritten[key_hash] = datetime.now(UTC)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_used(), name="api-keys-last-used")

    async def _write_used(self) -> None:
        used, self._unwritten = self._unwritten, {}
        try:
            await keys.touch(self.engine, used)
        except Exception as exc:  # advisory: a lost last_used_at must not fail anything
            log.warning("could not record API keys' last use: %s", type(exc).__name__)


def authorization_token(header: bytes | str | None) -> str | None:
    """The key in an `Authorization: Bearer KEY` header value, else None."""
    if header is None:
        return None
    value = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


# ---- the FastAPI side ---------------------------------------------------------------------

_bearer = HTTPBearer(
    scheme_name="ApiKey",
    description="An API key from `taskq keys create` or TASKQ_API_KEYS.",
    auto_error=False,
)

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = documented(
    401,
    403,
    _401="No API key, or one that is unknown or revoked",
    _403="The API key's scopes do not cover this call",
)


def _unauthorized(detail: str, error: str | None) -> HTTPException:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


async def authorize(ring: KeyRing, token: str | None, scopes: Iterable[Scope]) -> Principal:
    """The caller if its key covers one of `scopes`; else the 401 or 403 to answer."""
    principal = await ring.authenticate(token)
    if principal is None:
        if token is None:
            raise _unauthorized("an API key is required: send `Authorization: Bearer KEY`", None)
        raise _unauthorized("this API key is not valid (unknown or revoked)", "invalid_token")
    wanted = list(scopes)
    if not any(principal.allows(scope) for scope in wanted):
        raise forbidden(principal, *wanted)
    return principal


def forbidden(principal: Principal, *needed: Scope, why: str = "") -> HTTPException:
    """The 403 for a key whose scopes do not cover a call (RFC 6750's insufficient_scope)."""
    wanted = " or ".join(needed)
    return HTTPException(
        403,
        f"this API key's scopes ({', '.join(sorted(principal.scopes))}) do not cover this call; "
        f"it needs {wanted}{f' ({why})' if why else ''}",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{wanted}"'},
    )


def check_reader(principal: Principal, submitted_by: str) -> None:
    """For routes taking `require(Scope.READ, Scope.SUBMIT)` on one task: a submit key may read
    only the tasks it submitted (`tasks.submitted_by`); 403 otherwise."""
    if not principal.allows(Scope.READ) and submitted_by != principal.owner:
        raise forbidden(principal, Scope.READ, why="a submit key reads only the tasks it submitted")


def _dependency(scopes: tuple[Scope, ...]) -> Any:
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        ring: KeyRing = request.app.state.keyring
        return await authorize(ring, credentials.credentials if credentials else None, scopes)

    return Depends(check)


_DEPENDENCIES: dict[tuple[Scope, ...], Any] = {}


def require(*scopes: Scope) -> Any:
    """A dependency admitting keys with any of `scopes` (admin keys always); gives the Principal."""
    if not scopes:
        raise ValueError("require() needs at least one scope")
    if scopes not in _DEPENDENCIES:
        _DEPENDENCIES[scopes] = _dependency(scopes)
    return _DEPENDENCIES[scopes]
