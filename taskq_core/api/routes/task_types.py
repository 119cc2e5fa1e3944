"""`/task-types`: what the installed plugins provide, which failed to load, which are paused."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import Backends, BackendsDep
from taskq_core.api.responses import GUARDED, documented
from taskq_core.api.schemas import TaskTypes
from taskq_core.errors import TaskNotFoundError

router = APIRouter(
    tags=["task types"], dependencies=[require(Scope.READ)], responses=AUTH_RESPONSES
)

TypeName = Annotated[str, Path(min_length=1, max_length=200)]


class PauseState(BaseModel):
    name: str
    paused: bool
    paused_at: datetime | None


@router.get("/task-types", response_model=TaskTypes, responses=documented(*GUARDED))
async def list_task_types(backends: BackendsDep) -> dict[str, Any]:
    registry = backends.registry
    paused = await backends.storage.paused_task_types()
    return {
        "task_types": [
            {**t.describe(), "paused": t.name in paused, "paused_at": paused.get(t.name)}
            for t in registry
        ],
        "errors": [asdict(f) for f in registry.failures],
    }


async def _set(backends: Backends, name: str, paused: bool) -> dict[str, Any]:
    if name not in backends.registry:
        raise TaskNotFoundError(
            f"unknown task type {name!r}; known task types: {backends.registry.known_names()}"
        )
    await backends.storage.set_paused(name, paused)
    since = (await backends.storage.paused_task_types()).get(name)
    return {"name": name, "paused": since is not None, "paused_at": since}


ADMIN = [require(Scope.ADMIN)]


@router.post(
    "/task-types/{name}/pause",
    dependencies=ADMIN,
    response_model=PauseState,
    responses={404: {"description": "No installed plugin provides this task type"}},
)
async def pause_task_type(name: TypeName, backends: BackendsDep) -> dict[str, Any]:
    """No task of this type starts until it is resumed; running ones finish, pending ones wait,
    new ones are accepted and wait too. Survives restarts (it is a row in PostgreSQL)."""
    return await _set(backends, name, True)


@router.post(
    "/task-types/{name}/resume",
    dependencies=ADMIN,
    response_model=PauseState,
    responses={404: {"description": "No installed plugin provides this task type"}},
)
async def resume_task_type(name: TypeName, backends: BackendsDep) -> dict[str, Any]:
    """Let tasks of this type start again; those that waited are dispatched within a second."""
    return await _set(backends, name, False)
