"""`/workers`: the workers that are alive, and what each is running."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import BackendsDep
from taskq_core.api.schemas import WorkerList
from taskq_core.settings import Settings

router = APIRouter(tags=["workers"], dependencies=[require(Scope.READ)], responses=AUTH_RESPONSES)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("/workers", response_model=WorkerList)
async def list_workers(
    backends: BackendsDep, settings: Annotated[Settings, Depends(get_settings)]
) -> dict[str, Any]:
    """Workers whose heartbeat arrived within one lease period, newest first."""
    return {"workers": await backends.storage.list_workers(settings.lease_seconds)}
