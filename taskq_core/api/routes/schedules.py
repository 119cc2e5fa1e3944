"""`/schedules`: periodic tasks created at run time (plugins' own schedules are listed too)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from taskq_core import schedules
from taskq_core.api.auth import AUTH_RESPONSES, Scope, require
from taskq_core.api.deps import Backends, BackendsDep
from taskq_core.api.responses import GUARDED, WITH_BODY, documented
from taskq_core.errors import InvalidTaskError

# Reading needs the read scope; creating, changing and deleting need admin.
router = APIRouter(
    prefix="/schedules",
    tags=["schedules"],
    dependencies=[require(Scope.READ)],
    responses=AUTH_RESPONSES,
)
ADMIN = [require(Scope.ADMIN)]
EXISTS = "A schedule of this name exists"
MISSING = "No such schedule"
BAD = "Bad cron expression, time zone, task type or input (each a 422 naming the field)"

ScheduleName = Annotated[str, Path(pattern=schedules.NAME_PATTERN)]
CatchUp = Literal["once", "skip"]
# What JSON Schema can say of a cron expression: five or six fields of printable ASCII. Whether
# each field is in range (and the time zone exists, and the input suits the task type) is
# checked after, a 422 naming the field.
CRON_PATTERN = r"^[ \t]*[!-~]+([ \t]+[!-~]+){4,5}[ \t]*$"
CRON_HELP = "Five fields (minute hour day month weekday), or six with seconds first."
ZONE_HELP = "An IANA time zone, e.g. UTC or Europe/Berlin."
Cron = Annotated[str, Field(max_length=200, pattern=CRON_PATTERN, description=CRON_HELP)]
Zone = Annotated[str, Field(min_length=1, max_length=64, description=ZONE_HELP)]
TypeName = Annotated[str, Field(min_length=1, description="A registered task type.")]


class ScheduleCreate(BaseModel):
    """The body of `POST /schedules`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly-fibonacci",
                    "cron": "0 3 * * *",
                    "timezone": "Europe/Berlin",
                    "task_type": "FibonacciTask",
                    "input_data": {"n": 10},
                }
            ]
        },
    )

    name: str = Field(pattern=schedules.NAME_PATTERN, description="Unique within the queue.")
    cron: Cron
    timezone: Zone = "UTC"
    task_type: TypeName
    input_data: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = Field(default=None, ge=1, le=5, description="Default: the type's.")
    catch_up: CatchUp = Field(
        default="once",
        description="Ticks missed during an outage: `once` runs one task for them all, "
        "`skip` runs none.",
    )
    paused: bool = False


def _no_null_defaults(schema: dict[str, Any]) -> None:
    for field in schema["properties"].values():
        if field.get("default", 0) is None and "anyOf" not in field:
            del field["default"]


class ScheduleChange(BaseModel):
    """The body of `PATCH /schedules/{name}`: only the fields given change."""

    # Only `priority` may be null (back to the type's default); a null for any other field is a
    # 422, so the schema offers none (nor the `null` default that means "not given").
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)

    cron: Cron | SkipJsonSchema[None] = None
    timezone: Zone | SkipJsonSchema[None] = None
    task_type: TypeName | SkipJsonSchema[None] = None
    input_data: dict[str, Any] | SkipJsonSchema[None] = None
    priority: int | None = Field(default=None, ge=1, le=5, description="null: the type's.")
    catch_up: CatchUp | SkipJsonSchema[None] = None
    paused: bool | SkipJsonSchema[None] = Field(
        default=None, description="true pauses, false resumes."
    )


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
        return schedules.validate(backends.registry, values, backends.limits)
    except InvalidTaskError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors]
        ) from None


async def _first_tick(backends: Backends, values: dict[str, Any]) -> datetime:
    # From the database's clock, not this host's: the workers fire ticks on that one, and a
    # skewed API host would otherwise start a schedule hours early or late.
    now = await backends.storage.now()
    return schedules.next_tick(values["cron"], values["timezone"], now)


@router.post(
    "",
    dependencies=ADMIN,
    status_code=status.HTTP_201_CREATED,
    response_model=Schedule,
    responses=documented(*GUARDED, *WITH_BODY, 409, 422, _409=EXISTS, _422=BAD),
)
async def create_schedule(body: ScheduleCreate, backends: BackendsDep) -> dict[str, Any]:
    """Run `task_type` with `input_data` at every tick of `cron` in `timezone`."""
    values = _check(backends, body.model_dump())
    values["next_run_at"] = await _first_tick(backends, values)
    return await backends.storage.create_schedule(values)


@router.get("", response_model=ScheduleList, responses=documented(*GUARDED))
async def list_schedules(backends: BackendsDep) -> dict[str, Any]:
    return {"schedules": await backends.storage.list_schedules()}


@router.get(
    "/{name}", response_model=Schedule, responses=documented(*GUARDED, 404, 422, _404=MISSING)
)
async def get_schedule(name: ScheduleName, backends: BackendsDep) -> dict[str, Any]:
    return await backends.storage.get_schedule(name)


@router.patch(
    "/{name}",
    dependencies=ADMIN,
    response_model=Schedule,
    responses=documented(*GUARDED, *WITH_BODY, 404, 422, _404=MISSING, _422=BAD),
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
    next_run_at = await _first_tick(backends, values) if restart else None
    return await backends.storage.update_schedule(name, updates, next_run_at)


@router.delete(
    "/{name}",
    dependencies=ADMIN,
    status_code=status.HTTP_204_NO_CONTENT,
    responses=documented(*GUARDED, 404, 413, 422, _404=MISSING),
)
async def delete_schedule(name: ScheduleName, backends: BackendsDep) -> Response:
    """Delete a schedule; tasks it already created are kept. (A plugin's schedule comes back
    when a worker starts while the plugin is installed.)"""
    await backends.storage.delete_schedule(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
