"""Cron ticks in time zones across daylight-saving changes, missed ticks, durations."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from taskq_core.durations import parse_duration
from taskq_core.schedules import MISSED_AFTER, ScheduleError, check, next_tick, plan


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(cron: str, timezone: str, start: datetime, count: int) -> list[datetime]:
    out, tick = [], start
    for _ in range(count):
        tick = next_tick(cron, timezone, tick)
        out.append(tick)
    return out


def test_a_daily_time_follows_the_zone_across_spring_forward() -> None:
    # Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day.
    # As Debian cron does, the job runs once, at the first minute that exists (03:00 CEST).
    assert ticks("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 4) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_a_daily_time_runs_once_when_fall_back_repeats_it() -> None:
    # Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice.
    assert ticks("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23, 12), 4) == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # the first 02:30 (CEST) only
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]


@pytest.mark.parametrize("start", [utc(2026, 10, 24, 23, 30), utc(2026, 3, 28, 23, 30)])
def test_hourly_ticks_stay_an_hour_apart_through_both_changes(start: datetime) -> None:
    got = ticks("0 * * * *", "Europe/Berlin", start, 6)
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(hours=1)] * 5


def test_weekdays_at_nine_in_new_york_move_in_utc_with_its_dst() -> None:
    # 8 March 2026: New York goes from EST (UTC-5) to EDT (UTC-4).
    assert ticks("0 9 * * 1-5", "America/New_York", utc(2026, 3, 6), 3) == [
        utc(2026, 3, 6, 14),
        utc(2026, 3, 9, 13),
        utc(2026, 3, 10, 13),
    ]


def test_six_fields_put_seconds_first() -> None:
    assert ticks("*/20 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 50), 2) == [
        utc(2026, 1, 1, 0, 1, 0),
        utc(2026, 1, 1, 0, 1, 20),
    ]


@pytest.mark.parametrize(
    ("cron", "timezone", "message"),
    [
        ("61 * * * *", "UTC", "invalid cron expression"),
        ("* * *", "UTC", "invalid cron expression"),
        ("0 0 31 2 *", "UTC", "invalid cron expression"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_expressions_and_zones_are_refused(cron: str, timezone: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        check(cron, timezone)


def test_an_on_time_tick_becomes_a_task_and_the_schedule_moves_on() -> None:
    tick = utc(2026, 5, 1, 12)
    step = plan("0 * * * *", "UTC", tick, tick + timedelta(seconds=3), "skip")
    assert step.task_tick == tick
    assert step.next_run_at == utc(2026, 5, 1, 13)


@pytest.mark.parametrize(("policy", "task_tick"), [("once", utc(2026, 5, 1, 8)), ("skip", None)])
def test_ticks_missed_in_an_outage_follow_the_policy(
    policy: str, task_tick: datetime | None
) -> None:
    # Down from 08:00 to 12:30: ticks 08:00 .. 12:00 were missed.
    now = utc(2026, 5, 1, 12, 30)
    step = plan("0 * * * *", "UTC", utc(2026, 5, 1, 8), now, policy)
    assert step.task_tick == task_tick
    assert step.next_run_at == utc(2026, 5, 1, 13)  # no backlog of late ticks


def test_after_a_short_outage_recent_ticks_still_run_one_by_one() -> None:
    # Every 10 s, down for 2 minutes: ticks older than MISSED_AFTER collapse, recent ones run.
    now = utc(2026, 5, 1, 12, 2)
    step = plan("*/10 * * * * *", "UTC", utc(2026, 5, 1, 12), now, "once")
    assert step.task_tick == utc(2026, 5, 1, 12)
    assert step.next_run_at == now - MISSED_AFTER + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("15m", 900), ("45s", 45), ("1.5h", 5400), ("off", None)],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text, allow_off=True) == seconds


@pytest.mark.parametrize("text", ["", "7", "7w", "-1d", "0s", "d"])
def test_bad_durations_name_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"30d, 12h, 15m, 45s|longer than zero"):
        parse_duration(text, allow_off=True)


def test_off_is_refused_where_a_duration_is_needed() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("off")
