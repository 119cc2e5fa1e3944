"""API keys in PostgreSQL: make one, list, revoke, and the snapshot the API checks requests with.

A key is `tq_` and 43 characters from `secrets.token_urlsafe(32)`: 256 random bits. Only its
SHA-256 is stored. A slow password hash (bcrypt, scrypt, argon2) exists to make guessing a
*human-chosen* password from a stolen hash expensive; against 256 random bits guessing is already
hopeless, so the slowness would buy nothing and would cost every request (and the cache) a
deliberate tens of milliseconds. SHA-256 also lets the API find a key by its hash in one lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.db.models import api_keys
from taskq_core.errors import TaskqError

PREFIX = "tq_"  # lets secret scanners and our log filter recognise a key
NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"


class Scope(StrEnum):
    """What a key may do: read (every GET), submit (create tasks), admin (everything)."""

    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"


class KeyNameTakenError(TaskqError):
    """An API key with this name exists already (names are never reused, even once revoked)."""


class KeyNotFoundError(TaskqError):
    """No API key has this name."""


def new_token() -> str:
    """A fresh API key."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What is stored of a key, and how the API finds it (see the module docstring)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    name: str
    scopes: tuple[Scope, ...]
    key_hash: str


@dataclass(frozen=True)
class KeyTable:
    """The usable keys, and whether any key was ever created (then the API is never open)."""

    active: tuple[StoredKey, ...]
    any_created: bool


_SNAPSHOT = text(
    """
    SELECT name, scopes, key_hash, revoked_at IS NULL AS active FROM api_keys
    """
)


async def load(engine: AsyncEngine) -> KeyTable:
    """Every key in one statement: the API's cache is rebuilt from this."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_SNAPSHOT)).all()
    active = tuple(
        StoredKey(row.name, tuple(Scope(s) for s in row.scopes), row.key_hash)
        for row in rows
        if row.active
    )
    return KeyTable(active, any_created=bool(rows))


async def create(engine: AsyncEngine, name: str, scopes: Sequence[Scope]) -> str:
    """Store a new key named `name`; returns the key itself, which is not kept anywhere."""
    token = new_token()
    statement = insert(api_keys).values(
        name=name, scopes=sorted(set(scopes), key=list(Scope).index), key_hash=digest(token)
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(statement)
    except IntegrityError as exc:
        if "uq_api_keys_name" in str(exc.orig):
            raise KeyNameTakenError(f"an API key named {name!r} exists already") from None
        raise
    return token


async def listing(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Every key, oldest first, without anything of the key itself."""
    query = select(
        api_keys.c.name,
        api_keys.c.scopes,
        api_keys.c.created_at,
        api_keys.c.last_used_at,
        api_keys.c.revoked_at,
    ).order_by(api_keys.c.id)
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def revoke(engine: AsyncEngine, name: str) -> datetime | None:
    """Revoke the key `name`: when it was revoked before, else None (revoked now)."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(api_keys.c.revoked_at).where(api_keys.c.name == name).with_for_update()
            )
        ).first()
        if row is None:
            raise KeyNotFoundError(f"no API key is named {name!r}")
        if row.revoked_at is not None:
            revoked: datetime = row.revoked_at
            return revoked
        await conn.execute(
            update(api_keys).where(api_keys.c.name == name).values(revoked_at=func.now())
        )
    return None


_TOUCH = text(
    """
    UPDATE api_keys AS k SET last_used_at = u.at
    FROM unnest(CAST(:hashes AS text[]), CAST(:ats AS timestamptz[])) AS u(key_hash, at)
    WHERE k.key_hash = u.key_hash AND (k.last_used_at IS NULL OR k.last_used_at < u.at)
    """
)


async def touch(engine: AsyncEngine, used: Mapping[str, datetime]) -> None:
    """Record when keys (by hash) were last used, all in one statement."""
    if not used:
        return
    params = {"hashes": list(used), "ats": list(used.values())}
    async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        await conn.execute(_TOUCH, params)


async def any_created(engine: AsyncEngine) -> bool:
    """Whether any key was ever created (revoked ones count: revoking never reopens the API)."""
    async with engine.connect() as conn:
        return bool((await conn.execute(text("SELECT EXISTS (SELECT 1 FROM api_keys)"))).scalar())
