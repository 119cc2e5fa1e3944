"""`/health` (the process is up) and `/ready` (PostgreSQL and Redis both answer)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from taskq_core.api.deps import BackendsDep
from taskq_core.api.schemas import Readiness

router = APIRouter(tags=["health"])

READY_TIMEOUT = 2.0  # seconds per backend


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe: Any) -> str:
    try:
        await asyncio.wait_for(probe(), READY_TIMEOUT)
    except TimeoutError:
        return f"unavailable: no answer within {READY_TIMEOUT:g}s"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "PostgreSQL or Redis is unreachable"}},
)
async def ready(backends: BackendsDep) -> JSONResponse:
    postgresql, redis = await asyncio.gather(
        _check("postgresql", backends.storage.ping), _check("redis", backends.broker.ping)
    )
    ok = postgresql == "ok" and redis == "ok"
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "postgresql": postgresql, "redis": redis},
        status_code=200 if ok else 503,
    )
