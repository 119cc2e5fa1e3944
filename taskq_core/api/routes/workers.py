"""`/workers`: the workers that are alive, and what each is running."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import BackendsDep, SettingsDep
from taskq_core.api.responses import GUARDED, documented
from taskq_core.api.schemas import WorkerList

router = APIRouter(tags=["workers"], dependencies=[require(Scope.READ)], responses=AUTH_RESPONSES)


@router.get("/workers", response_model=WorkerList, responses=documented(*GUARDED))
async def list_workers(backends: BackendsDep, settings: SettingsDep) -> dict[str, Any]:
    """Workers whose heartbeat arrived within one lease period, newest first."""
    return {"workers": await backends.storage.list_workers(settings.lease_seconds)}
