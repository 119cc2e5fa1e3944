"""The one table mapping errors to HTTP answers: outages are 503 with a message, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError

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


def _redact(exc: BaseException) -> str:
    # Driver messages can carry a connection string; keep only the first line, which names the
    # failure (connection refused, timeout), and mask any URL password or key left in it.
    return redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("PostgreSQL unavailable: %s", _redact(exc))
    return JSONResponse(
        {"detail": "PostgreSQL is unavailable; nothing was written. Try again shortly."},
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("Redis unavailable: %s", _redact(exc))
    return JSONResponse(
        {"detail": "Redis is unavailable; nothing was written. Try again shortly."},
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _range(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=416)


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]

HANDLERS: dict[type[Exception], Handler] = {
    OperationalError: _database_down,
    DBAPIError: _database_down,
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
