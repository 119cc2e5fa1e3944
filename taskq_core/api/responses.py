"""Every error status the API answers, in one table, so /openapi.json documents each route's.

A route lists what it can answer with `documented(...)`: `responses=documented(404, 409)`.
`GUARDED` is what every route behind the API's guards adds (the rate limit's 429, and 503 when
Redis cannot count); api/auth.py's `AUTH_RESPONSES` (401, 403) are made here too; `WITH_BODY`
what every route taking a body adds. The bodies are `ErrorMessage` (`{"detail": "..."}`), or
a list of errors: `FieldErrors` for 400 (where the body stopped being JSON), `ValidationErrors`
for 422. Every route taking parameters or a body lists its 422 here: FastAPI then leaves out its
own `HTTPValidationError`, so a generated client knows one error shape per status.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorMessage(BaseModel):
    """The body of every error answer except 400 and 422: one sentence saying what went wrong."""

    detail: str


class FieldError(BaseModel):
    type: str
    loc: list[str | int] = Field(description="Where: `body` and the position, or the field.")
    msg: str
    input: Any = None


class ValidationErrors(BaseModel):
    """The body of a 422: every bad field, where (`loc`) and what is wrong with it (`msg`)."""

    detail: list[FieldError]


class FieldErrors(BaseModel):
    """The body of a 400 (a body that is not JSON): where reading it failed, as a 422 lists
    its fields, or (bytes that are not even text) one sentence."""

    detail: list[FieldError] | str


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    }
}

DESCRIPTIONS: dict[int, str] = {
    400: "The body is not parseable JSON (for example, nested too deeply to read)",
    401: "No valid API key (`Authorization: Bearer KEY`)",
    403: "The API key's scope does not cover this call",
    404: "No such task",
    409: "The request conflicts with the task's state or an earlier request",
    413: "The request body is over the size limit (TASKQ_MAX_BODY_BYTES)",
    416: "The range is outside the artifact",
    422: "Invalid request: `detail` lists each bad field's location and message",
    429: "Too many requests from this client (TASKQ_RATE_LIMIT); retry after `Retry-After`",
    503: "PostgreSQL or Redis is unavailable; nothing was written",
}

_CHALLENGE = {
    "WWW-Authenticate": {
        "description": "`Bearer`, with `error` and `scope` when a key was refused (RFC 6750).",
        "schema": {"type": "string"},
    }
}

HEADERS: dict[int, dict[str, Any]] = {
    401: _CHALLENGE,
    403: _CHALLENGE,
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

# Added to every route behind the API's guards (every route but /health and /ready), besides
# api/auth.py's AUTH_RESPONSES (401, 403), which its routers carry.
GUARDED: tuple[int, ...] = (429, 503)
# Added to every route that reads a request body.
WITH_BODY: tuple[int, ...] = (400, 413)


def documented(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route answering `codes`; `descriptions` (`_409="..."`) override the
    table's wording for this route."""
    table: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        entry: dict[str, Any] = {
            "description": descriptions.get(f"_{code}", DESCRIPTIONS[code]),
        }
        if code == 400:
            entry["model"] = FieldErrors
        elif code == 422:
            entry["model"] = ValidationErrors
        else:
            entry["model"] = ErrorMessage
        if code in HEADERS:
            entry["headers"] = HEADERS[code]
        table[code] = entry
    return table
