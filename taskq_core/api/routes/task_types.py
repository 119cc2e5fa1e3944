"""`/task-types`: what the installed plugins provide, and which failed to load."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import BackendsDep
from taskq_core.api.schemas import TaskTypes

router = APIRouter(
    tags=["task types"], dependencies=[require(Scope.READ)], responses=AUTH_RESPONSES
)


@router.get("/task-types", response_model=TaskTypes)
async def list_task_types(backends: BackendsDep) -> dict[str, Any]:
    registry = backends.registry
    return {
        "task_types": [t.describe() for t in registry],
        "errors": [asdict(f) for f in registry.failures],
    }
