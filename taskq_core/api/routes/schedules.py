"""`/schedules`: periodic tasks created at run time (plugins' own schedules are listed too)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from taskq_core import schedules
from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import Backends, BackendsDep
from taskq_core.errors import InvalidTaskError

# Reading needs the read scope; creating, changing and deleting need admin.
router = APIRouter(
    prefix="/schedules",
    tags=["schedules"],
    dependencies=[require(Scope.READ)],
    responses=AUTH_RESPONSES,
)
ADMIN = [require(Scope.ADMIN)]

ScheduleName = Annotated[str, Path(pattern=schedules.NAME_PATTERN)]
CatchUp = Literal["once", "skip"]


class ScheduleCreate(BaseModel):
    """The body of `POST /schedules`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=schedules.NAME_PATTERN, description="Unique within the queue.")
    cron: str = Field(
        max_length=200,
        description="Five fields (minute hour day month weekday), or six with seconds first.",
    )
    timezone: str = Field(default="UTC", max_length=64, description="An IANA time zone.")
    task_type: str
    input_data: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = Field(default=None, ge=1, le=5, description="Default: the type's.")
    catch_up: CatchUp = Field(
        default="once",
        description="Ticks missed during an outage: `once` runs one task for them all, "
        "`skip` runs none.",
    )
    paused: bool = False


class ScheduleChange(BaseModel):
    """The body of `PATCH /schedules/{name}`: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    task_type: str | None = None
    input_data: dict[str, Any] | None = None
    priority: int | None = Field(default=None, ge=1, le=5)
    catch_up: CatchUp | None = None
    paused: bool | None = Field(default=None, description="true pauses, false resumes.")


class Schedule(BaseModel):
    name: str
    cron: str
    timezone: str
    task_type: str
    input_data: dict[str, Any]
    priority: int | None
    catch_up: CatchUp
    paused: bool
    source: str = Field(description="`api`, or `plugin:NAME` for a plugin's declaration.")
    next_run_at: datetime = Field(description="The next tick to become a task (UTC).")
    created_at: datetime
    updated_at: datetime


class ScheduleList(BaseModel):
    schedules: list[Schedule]


def _invalid(field: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}]
    )


def _check(backends: Backends, values: dict[str, Any]) -> dict[str, Any]:
    """Cron, time zone and input checked (the input against the type's schema, as stored);
    RequestValidationError (422) names the field."""
    try:
        return schedules.validate(backends.registry, values)
    except InvalidTaskError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors]
        ) from None


def _first_tick(values: dict[str, Any]) -> datetime:
    return schedules.next_tick(values["cron"], values["timezone"], datetime.now(UTC))


@router.post(
    "",
    dependencies=ADMIN,
    status_code=status.HTTP_201_CREATED,
    response_model=Schedule,
    responses={
        409: {"description": "A schedule of this name exists"},
        422: {"description": "Bad cron expression, time zone, task type or input"},
    },
)
async def create_schedule(body: ScheduleCreate, backends: BackendsDep) -> dict[str, Any]:
    """Run `task_type` with `input_data` at every tick of `cron` in `timezone`."""
    values = _check(backends, body.model_dump())
    values["next_run_at"] = _first_tick(values)
    return await backends.storage.create_schedule(values)


@router.get("", response_model=ScheduleList)
async def list_schedules(backends: BackendsDep) -> dict[str, Any]:
    return {"schedules": await backends.storage.list_schedules()}


@router.get(
    "/{name}", response_model=Schedule, responses={404: {"description": "No such schedule"}}
)
async def get_schedule(name: ScheduleName, backends: BackendsDep) -> dict[str, Any]:
    return await backends.storage.get_schedule(name)


@router.patch(
    "/{name}",
    dependencies=ADMIN,
    response_model=Schedule,
    responses={
        404: {"description": "No such schedule"},
        422: {"description": "Bad cron expression, time zone, task type or input"},
    },
)
async def change_schedule(
    name: ScheduleName, body: ScheduleChange, backends: BackendsDep
) -> dict[str, Any]:
    """Pause, resume or change a schedule. A new cron or time zone, or a resume, restarts it
    from now: ticks that passed while it was paused do not run."""
    current = await backends.storage.get_schedule(name)
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field != "priority":
            raise _invalid(field, "may not be null", None)
    values = _check(backends, {**current, **changes})
    updates = {k: values[k] for k in changes}
    restart = (
        values["cron"] != current["cron"]
        or values["timezone"] != current["timezone"]
        or (current["paused"] and not values["paused"])
    )
    next_run_at = _first_tick(values) if restart else None
    return await backends.storage.update_schedule(name, updates, next_run_at)


@router.delete(
    "/{name}",
    dependencies=ADMIN,
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such schedule"}},
)
async def delete_schedule(name: ScheduleName, backends: BackendsDep) -> Response:
    """Delete a schedule; tasks it already created are kept. (A plugin's schedule comes back
    when a worker starts while the plugin is installed.)"""
    await backends.storage.delete_schedule(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
