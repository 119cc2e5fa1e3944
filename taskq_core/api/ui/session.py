"""The dashboard's session: a signed cookie (HttpOnly, SameSite=Strict) holding who logged in and
with which scopes, a CSRF token per session, and the one call that checks an API key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Response
from pydantic import SecretStr

from taskq_core.api.ui import keys

COOKIE = "taskq_session"
LIFETIME_SECONDS = 8 * 3600  # a working day; a revoked key's session ends with it at the latest
# Used when Settings.session_secret is unset: sessions then last as long as this process.
_PROCESS_SECRET = secrets.token_bytes(32)


def _secret(request: Request) -> bytes:
    configured: SecretStr | None = request.app.state.settings.session_secret
    return configured.get_secret_value().encode() if configured else _PROCESS_SECRET


def _sign(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


@dataclass
class Session:
    """One browser's session; `scopes` is empty until a key is accepted (or the API runs open)."""

    sid: str
    scopes: frozenset[str]
    owner: str | None  # whose key logged in (the key ring's owner name)
    expires: int
    key_hash: str | None = None  # the key's SHA-256, looked up on every request; never the key
    open_api: bool = False  # no keys configured: nobody logs in
    fresh: bool = field(default=False, compare=False)  # not yet in the browser's cookie

    @property
    def can_see(self) -> bool:
        return bool(self.scopes & {keys.READ, keys.ADMIN})

    @property
    def can_submit(self) -> bool:
        return bool(self.scopes & {keys.SUBMIT, keys.ADMIN})

    @property
    def can_act(self) -> bool:
        return keys.ADMIN in self.scopes

    def csrf_token(self, secret: bytes) -> str:
        return _sign(secret, f"csrf|{self.sid}".encode())

    def encode(self, secret: bytes) -> str:
        body = json.dumps(
            {
                "sid": self.sid,
                "scopes": sorted(self.scopes),
                "owner": self.owner,
                "exp": self.expires,
                "kh": self.key_hash,
            }
        ).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{_sign(secret, payload.encode())}"


def new_session(
    scopes: frozenset[str], owner: str | None, open_api: bool, key_hash: str | None = None
) -> Session:
    return Session(
        sid=secrets.token_urlsafe(18),
        scopes=scopes,
        owner=owner,
        expires=int(time.time()) + LIFETIME_SECONDS,
        key_hash=key_hash,
        open_api=open_api,
        fresh=True,
    )


def decode(secret: bytes, cookie: str | None) -> Session | None:
    """The session in a cookie, or None when it is missing, forged or expired."""
    if not cookie or "." not in cookie:
        return None
    payload, signature = cookie.rsplit(".", 1)
    if not hmac.compare_digest(signature, _sign(secret, payload.encode())):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        session = Session(
            sid=str(data["sid"]),
            scopes=frozenset(str(s) for s in data["scopes"]),
            owner=data["owner"],
            expires=int(data["exp"]),
            key_hash=data.get("kh"),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > time.time() else None


async def current_session(request: Request) -> Session:
    """This browser's session; a new one (all scopes when the API runs open) if it has none."""
    session = decode(_secret(request), request.cookies.get(COOKIE))
    anyone = await keys.check(request, None)  # the key ring answers OPEN while no key exists
    if anyone is not None and anyone.open:
        if session is None or session.owner != keys.OPEN_OWNER:
            session = new_session(keys.ALL_SCOPES, keys.OPEN_OWNER, open_api=True)
        session.open_api = True
        return session
    if session is not None and session.key_hash is not None:
        holder = await keys.recheck(request, session.key_hash)
        # Revoked since login: the session ends. Otherwise the key's scopes as they are now.
        session.scopes = holder.scopes if holder is not None else frozenset()
    elif session is not None and session.scopes:
        session = None  # issued while the API was open: keys exist now, so log in
    return session or new_session(frozenset(), None, open_api=False)


SessionDep = Annotated[Session, Depends(current_session)]


def store(request: Request, response: Response, session: Session) -> None:
    """Put the session into the browser's cookie (always HttpOnly, SameSite=Strict)."""
    response.set_cookie(
        COOKIE,
        session.encode(_secret(request)),
        max_age=LIFETIME_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def csrf_token(request: Request, session: Session) -> str:
    return session.csrf_token(_secret(request))


def csrf_ok(request: Request, session: Session, token: str | None) -> bool:
    """The form carries this session's token (a page of ours rendered it)."""
    return token is not None and hmac.compare_digest(token, csrf_token(request, session))
