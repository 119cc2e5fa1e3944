"""Schedules: the API's checks, and every tick becoming exactly one task whatever crashes."""

from __future__ import annotations

import itertools
import re
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, Servers, Workers, wait_for

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}
EVERY_SECOND = "* * * * * *"


def create(api: Api, **body: Any) -> dict[str, Any]:
    body = {"task_type": "FibonacciTask", "input_data": {"n": 5}, **body}
    response = api.client.post("/schedules", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def ticks(servers: Servers, name: str) -> list[tuple[Any, ...]]:
    """(tick, task id, task's input) of `name`, in tick order."""
    return servers.sql(
        "SELECT k.tick_at, t.id, t.input_data FROM schedule_ticks k JOIN tasks t "
        "ON t.id = k.task_id WHERE k.schedule = %s ORDER BY k.tick_at",
        (name,),
    )


def test_create_list_change_and_delete(api: Api) -> None:
    made = create(api, name="hourly", cron="0 * * * *", timezone="Europe/Berlin", priority=2)
    assert made["timezone"] == "Europe/Berlin"
    assert made["input_data"] == {"n": 5}
    assert made["paused"] is False
    assert made["source"] == "api"
    assert made["catch_up"] == "once"
    assert made["next_run_at"].endswith(":00:00Z") or made["next_run_at"].endswith(":00:00+00:00")
    listed = api.client.get("/schedules").json()["schedules"]
    assert [s["name"] for s in listed] == ["hourly"]

    paused = api.client.patch("/schedules/hourly", json={"paused": True})
    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    changed = api.client.patch(
        "/schedules/hourly", json={"cron": "30 4 * * *", "paused": False, "catch_up": "skip"}
    ).json()
    assert (changed["cron"], changed["paused"], changed["catch_up"]) == (
        "30 4 * * *",
        False,
        "skip",
    )
    assert api.client.get("/schedules/hourly").json()["cron"] == "30 4 * * *"

    assert api.client.delete("/schedules/hourly").status_code == 204
    assert api.client.get("/schedules/hourly").status_code == 404
    assert api.client.delete("/schedules/hourly").status_code == 404
    assert api.client.patch("/schedules/hourly", json={"paused": True}).status_code == 404


def test_a_taken_name_is_409(api: Api) -> None:
    create(api, name="twice", cron="* * * * *")
    again = api.client.post(
        "/schedules",
        json={
            "name": "twice",
            "cron": "* * * * *",
            "task_type": "FibonacciTask",
            "input_data": {"n": 2},
        },
    )
    assert again.status_code == 409
    assert "twice" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"cron": "61 * * * *"}, ["body", "cron"], "invalid cron expression"),
        ({"timezone": "Moon/Base"}, ["body", "timezone"], "unknown time zone"),
        ({"input_data": {"n": "seven"}}, ["body", "input_data", "n"], "integer"),
        ({"input_data": {"n": 1, "extra": 2}}, ["body", "input_data", "extra"], "xtra"),
        ({"task_type": "NoSuchTask"}, ["body", "task_type"], "FibonacciTask"),
        ({"priority": 9}, ["body", "priority"], "less than or equal"),
        ({"catch_up": "all"}, ["body", "catch_up"], "once"),
        ({"name": "has space"}, ["body", "name"], "pattern"),
    ],
)
def test_bad_schedules_are_422_naming_the_field_and_write_nothing(
    api: Api, clean: Servers, body: dict[str, Any], loc: list[str], message: str
) -> None:
    full = {"name": "bad", "cron": "* * * * *", "task_type": "FibonacciTask", **body}
    full.setdefault("input_data", {"n": 1})
    response = api.client.post("/schedules", json=full)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert message in error["msg"]
    assert clean.sql("SELECT count(*) FROM schedules") == [(0,)]


def test_a_bad_change_is_422_and_changes_nothing(api: Api) -> None:
    create(api, name="keep", cron="0 * * * *")
    response = api.client.patch("/schedules/keep", json={"input_data": {"n": "x"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input_data", "n"]
    assert api.client.get("/schedules/keep").json()["input_data"] == {"n": 5}


def test_the_schedules_routes_are_in_the_openapi_document(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert set(paths["/schedules"]) == {"get", "post"}
    assert set(paths["/schedules/{name}"]) == {"get", "patch", "delete"}
    assert "409" in paths["/schedules"]["post"]["responses"]
    assert "404" in paths["/schedules/{name}"]["delete"]["responses"]


def test_every_tick_is_one_task_with_several_workers(api: Api, workers: Workers) -> None:
    servers = workers.servers
    workers.start(3, **FAST)
    create(api, name="each-second", cron=EVERY_SECOND, input_data={"n": 9})
    wait_for(lambda: len(ticks(servers, "each-second")) >= 6, timeout=30, what="six ticks")
    api.client.patch("/schedules/each-second", json={"paused": True})
    rows = ticks(servers, "each-second")
    gaps = {b[0] - a[0] for a, b in itertools.pairwise(rows)}
    assert gaps == {timedelta(seconds=1)}, rows  # no tick missed, none doubled
    assert len({task_id for _, task_id, _ in rows}) == len(rows)
    assert all(data == {"n": 9} for _, _, data in rows)
    count = servers.sql("SELECT count(*) FROM tasks WHERE input_data = '{\"n\": 9}'")[0][0]
    assert count == len(rows)  # no task without its tick


def _scheduled_by(log: Path) -> int:
    return len(re.findall(r"schedule 'each-second': tick .* is task", log.read_text()))


def test_sigkill_of_the_scheduling_worker_loses_and_doubles_no_tick(
    api: Api, workers: Workers
) -> None:
    servers = workers.servers
    procs = workers.start(3, **FAST)
    create(api, name="each-second", cron=EVERY_SECOND)
    kills = 0
    deadline = time.monotonic() + 60
    while kills < 4 and time.monotonic() < deadline:
        # Kill whichever worker most recently turned a tick into a task, mid-stride.
        logs = {proc: log for proc, log in workers.processes.started if proc.poll() is None}
        before = {proc: _scheduled_by(log) for proc, log in logs.items()}

        def firing(logs: dict[Any, Path] = logs, before: dict[Any, int] = before) -> Any:
            return next((p for p, log in logs.items() if _scheduled_by(log) > before[p]), None)

        busy = wait_for(firing, timeout=20, what="a worker to fire a tick")
        busy.send_signal(signal.SIGKILL)
        busy.wait(10)
        kills += 1
        procs += workers.start(1, **FAST)
    assert kills == 4
    done = len(ticks(servers, "each-second"))
    wait_for(lambda: len(ticks(servers, "each-second")) >= done + 3, what="ticks after the kills")
    api.client.patch("/schedules/each-second", json={"paused": True})
    rows = ticks(servers, "each-second")
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(rows)]
    assert set(gaps) == {timedelta(seconds=1)}, rows
    total = servers.sql("SELECT count(*) FROM tasks WHERE input_data = '{\"n\": 5}'")[0][0]
    assert total == len(rows)


def test_missed_ticks_follow_the_catch_up_policy(api: Api, workers: Workers) -> None:
    servers = workers.servers
    create(api, name="daily-once", cron="0 0 * * *", catch_up="once", input_data={"n": 1})
    create(api, name="daily-skip", cron="0 0 * * *", catch_up="skip", input_data={"n": 2})
    # The workers were all down for three days.
    servers.sql("UPDATE schedules SET next_run_at = date_trunc('day', now()) - interval '3 days'")
    missed = servers.sql("SELECT next_run_at FROM schedules LIMIT 1")[0][0]
    workers.start(**FAST)
    wait_for(
        lambda: servers.sql("SELECT count(*) FROM schedules WHERE next_run_at > now()") == [(2,)],
        what="both schedules to catch up",
    )
    once = ticks(servers, "daily-once")
    assert [(tick, data) for tick, _, data in once] == [(missed, {"n": 1})]
    assert ticks(servers, "daily-skip") == []
    assert "skipped missed ticks" in workers.processes.output()


def test_a_plugin_declares_a_schedule_that_workers_store_and_run(
    api: Api, clean: Servers, workers: Workers, sites: dict[str, Path]
) -> None:
    workers.sites.append(sites["taskq-cron"])
    workers.start(**FAST)
    wait_for(lambda: len(ticks(clean, "cron-fib")) >= 2, what="the plugin's schedule to fire")
    stored = api.client.get("/schedules").json()["schedules"]
    assert [(s["name"], s["source"], s["timezone"], s["priority"]) for s in stored] == [
        ("cron-fib", "plugin:taskq-cron", "Europe/Berlin", 4)
    ]
    assert "schedule 'cron-bad' not stored" in workers.processes.output()
    api.client.patch("/schedules/cron-fib", json={"paused": True})
