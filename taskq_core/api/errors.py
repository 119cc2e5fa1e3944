"""The one table mapping errors to HTTP answers: outages are 503 with a message, never a 500;
a value PostgreSQL refuses is the request's fault (422); validation errors never echo a large or
deep input back; a wrong method is a 405 whose `Allow` names every method the path serves."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from taskq_core.errors import (
    BackendUnavailableError,
    IdempotencyConflictError,
    RangeNotSatisfiableError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    TaskNotFoundError,
    TaskStateError,
)
from taskq_core.redaction import redact

log = logging.getLogger("taskq.api")


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error echoing a request's lone surrogate
    (`"\\ud800"` decodes to one) must still be writable, as `\\ud800` again."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode()


def _redact(exc: BaseException) -> str:
    # Driver messages can carry a connection string; keep only the first line, which names the
    # failure (connection refused, timeout), and mask any URL password or key left in it.
    return redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def _outage(what: str, detail: str) -> Handler:
    """A 503 for a backend that failed (`what`, logged with the redacted error): nothing was
    written, and the client may try again shortly."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s: %s", what, _redact(exc))
        return AsciiJSONResponse(
            {"detail": f"{detail}; nothing was written. Try again shortly."},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    return handle


_database_down = _outage("PostgreSQL unavailable", "PostgreSQL is unavailable")
_pool_exhausted = _outage(
    "every PostgreSQL connection of this process stayed busy", "PostgreSQL connections are all busy"
)
_redis_down = _outage("Redis unavailable", "Redis is unavailable")


async def _data_refused(request: Request, exc: Exception) -> JSONResponse:
    # Validation should refuse whatever PostgreSQL would; if a value slips through, it is still
    # the request's fault, not an outage.
    log.warning("PostgreSQL refused a value: %s", _redact(exc))
    error = {"type": "data_error", "loc": ["body"], "msg": f"refused: {_redact(exc)}"}
    return AsciiJSONResponse({"detail": [error]}, status_code=422)


ECHO_LIMIT = 200  # characters of a refused input echoed back in a 422


def _echo(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= ECHO_LIMIT
    return value is None or isinstance(value, bool | int | float)


def _clean(error: dict[str, Any]) -> dict[str, Any]:
    """An error of the list, with its input only when small and flat, and no context objects:
    echoing a 1 MiB or 50,000-deep input would cost more than refusing it."""
    clean = {"type": error.get("type", "invalid"), "loc": error["loc"], "msg": error["msg"]}
    value = error.get("input")
    if _echo(value) and not (isinstance(value, float) and value != value):
        clean["input"] = value
    return clean


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = jsonable_encoder([_clean(e) for e in errors])
    if any(e.get("type") == "json_invalid" for e in errors):
        return AsciiJSONResponse({"detail": detail}, status_code=400)  # not JSON at all
    content_type = request.headers.get("content-type", "")
    if request.method in ("POST", "PATCH", "PUT") and "json" not in content_type:
        # urllib's default is a form: say what the body must be, not only that it is no object.
        for error in detail:
            if error["loc"] == ["body"]:
                error["msg"] += f"; send `Content-Type: application/json` (got {content_type!r})"
    return AsciiJSONResponse({"detail": detail}, status_code=422)


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some route fully matches at this request's path: the router stops at the
    first route whose path matches, which names only its own methods."""
    return [
        method
        for method in METHODS
        if any(
            route.matches({**scope, "method": method})[0] == Match.FULL
            for route in app.router.routes
        )
    ]


async def _http_error(request: Request, exc: Exception) -> JSONResponse | Any:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = ", ".join(allowed_methods(request.app, request.scope))
        return AsciiJSONResponse(
            {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allow}
        )
    return await http_exception_handler(request, exc)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return AsciiJSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return AsciiJSONResponse({"detail": str(exc)}, status_code=404)


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return AsciiJSONResponse({"detail": str(exc)}, status_code=409)


async def _range(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=416)


HANDLERS: dict[type[Exception], Handler] = {
    DataError: _data_refused,
    OperationalError: _database_down,
    DBAPIError: _database_down,
    PoolTimeoutError: _pool_exhausted,
    RedisError: _redis_down,
    BackendUnavailableError: _unavailable,
    TaskNotFoundError: _not_found,
    TaskStateError: _conflict,
    IdempotencyConflictError: _conflict,
    RangeNotSatisfiableError: _range,
    ScheduleNotFoundError: _not_found,
    ScheduleExistsError: _conflict,
}


def handler_for(exc: Exception) -> Handler | None:
    """The handler FastAPI would pick for `exc`: the one of its nearest class."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return handler
    return None


def install(app: FastAPI) -> None:
    for cls, handler in HANDLERS.items():
        app.add_exception_handler(cls, handler)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
