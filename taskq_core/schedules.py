"""Cron schedules: parsing and checking an expression and time zone, the next tick, missed ticks.

Cron arithmetic is cronsim's: five fields as in Debian cron (minute hour day month weekday, with
Debian cron's handling of daylight-saving changes for jobs at fixed times), or six with seconds
first. Every instant here is timezone-aware; ticks are computed in the schedule's time zone and
stored in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskq_core.errors import InvalidTaskError, UnknownTaskTypeError
from taskq_core.inputs import DEFAULT_LIMITS, InputLimits, check_input
from taskq_core.plugins import Registry

CATCH_UP_POLICIES = ("once", "skip")
# A tick still not turned into a task this long after its time counts as missed (the workers
# were all down or stalled, or PostgreSQL was unreachable): it follows the schedule's catch-up
# policy instead of running late.
MISSED_AFTER = timedelta(seconds=60)
NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used; the message says which and why."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. Europe/Berlin)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin"
        ) from None


def next_tick(cron: str, timezone: str, after: datetime) -> datetime:
    """The first tick of `cron` in `timezone` strictly after `after`, in UTC."""
    try:
        ticks = CronSim(cron, after.astimezone(zone(timezone)))
        return next(ticks).astimezone(UTC)
    except CronSimError as exc:
        raise ScheduleError(f"invalid cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise ScheduleError(f"cron expression {cron!r} never fires") from None


def check(cron: str, timezone: str) -> None:
    """Raise ScheduleError unless `cron` parses and `timezone` exists."""
    next_tick(cron, timezone, datetime.now(UTC))


@dataclass(frozen=True)
class Step:
    """What to do with a due tick: create a task keyed by `task_tick` (None: create none), and
    move the schedule on to `next_run_at`."""

    task_tick: datetime | None
    next_run_at: datetime


def plan(cron: str, timezone: str, tick: datetime, now: datetime, catch_up: str) -> Step:
    """The step for a schedule whose next tick, `tick`, is due at `now`.

    An on-time tick becomes one task. Ticks older than MISSED_AFTER become one task together
    (`once`, keyed by the first of them) or none (`skip`), and the schedule resumes at its first
    tick that is not missed yet."""
    if now - tick <= MISSED_AFTER:
        return Step(tick, next_tick(cron, timezone, tick))
    resume = next_tick(cron, timezone, now - MISSED_AFTER)
    return Step(tick if catch_up == "once" else None, resume)


def _error(field: str, message: str, value: Any, kind: str = "value_error") -> InvalidTaskError:
    return InvalidTaskError([{"type": kind, "loc": (field,), "msg": message, "input": value}])


def validate(
    registry: Registry, values: dict[str, Any], limits: InputLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """`values` (cron, timezone, task_type, input_data, priority, catch_up) checked, the input
    as every task's (`inputs.check_input`) and as its type's model dumps it; raises
    InvalidTaskError naming the bad field."""
    try:
        zone(values["timezone"])
    except ScheduleError as exc:
        raise _error("timezone", str(exc), values["timezone"]) from None
    try:
        check(values["cron"], values["timezone"])
    except ScheduleError as exc:
        raise _error("cron", str(exc), values["cron"]) from None
    if values.get("catch_up", "once") not in CATCH_UP_POLICIES:
        raise _error("catch_up", "must be once or skip", values["catch_up"])
    priority = values.get("priority")
    if priority is not None and not 1 <= priority <= 5:
        raise _error("priority", "must be 1..5", priority)
    try:
        kind = registry.get(values["task_type"])
    except UnknownTaskTypeError as exc:
        raise _error("task_type", str(exc), values["task_type"], "unknown_task_type") from None
    stored = check_input(kind, values["input_data"], limits)
    return {**values, "task_type": kind.name, "input_data": stored}
