"""The dashboard's one door to API keys: whether keys are required, and a key's scopes.

Everything the dashboard knows about keys goes through `required` and `scopes_of`, so the API's
key store (`taskq_core/api/auth.py`, issue #9) plugs in here and nowhere else."""

from __future__ import annotations

import hmac

from fastapi import Request

READ = "read"
SUBMIT = "submit"
ADMIN = "admin"
ALL_SCOPES = frozenset({READ, SUBMIT, ADMIN})


def _configured_keys(request: Request) -> list[str]:
    # TASKQ_API_KEYS: comma-separated keys, each with every scope (the SPEC's contract).
    raw: str | None = getattr(request.app.state.settings, "api_keys", None)
    return [key.strip() for key in (raw or "").split(",") if key.strip()]


async def required(request: Request) -> bool:
    """Whether the API runs behind keys (else the dashboard has no login)."""
    return bool(_configured_keys(request))


async def scopes_of(request: Request, key: str) -> frozenset[str] | None:
    """The scopes of `key`, or None when it is not a valid key."""
    for known in _configured_keys(request):
        if hmac.compare_digest(known.encode(), key.encode()):
            return ALL_SCOPES
    return None
