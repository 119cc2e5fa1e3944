"""The one table mapping errors to HTTP answers: outages are 503 with a message, never a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError

from taskq_core.errors import (
    BackendUnavailableError,
    IdempotencyConflictError,
    TaskNotFoundError,
    TaskStateError,
)

log = logging.getLogger("taskq.api")


def _redact(exc: BaseException) -> str:
    # Driver messages can carry a connection string; keep only the first line, which names the
    # failure (connection refused, timeout) without credentials in any driver we use.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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


def install(app: FastAPI) -> None:
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(DBAPIError, _database_down)
    app.add_exception_handler(RedisError, _redis_down)
    app.add_exception_handler(BackendUnavailableError, _unavailable)
    app.add_exception_handler(TaskNotFoundError, _not_found)
    app.add_exception_handler(TaskStateError, _conflict)
    app.add_exception_handler(IdempotencyConflictError, _conflict)
