"""Bulk retry and cancel with the listing's filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from taskq_core.db.operations import CANCELLABLE, RETRYABLE
from tests.conftest import Api, Servers, Workers, wait_finished, wait_for

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}


def submit(api: Api, task_type: str, priority: int = 3, **input_data: Any) -> int:
    body = {"task_type": task_type, "input_data": input_data, "priority": priority}
    response = api.client.post("/tasks/", json=body)
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def test_retry_runs_failed_tasks_again_with_their_history_kept(api: Api, workers: Workers) -> None:
    servers = workers.servers
    failing = [submit(api, "PermanentTask") for _ in range(3)]
    fine = submit(api, "FibonacciTask", n=3)
    workers.start(**FAST)
    wait_finished(servers, 4)
    cutoff = datetime.now(UTC).isoformat()
    late = submit(api, "PermanentTask")
    wait_finished(servers, 5)

    retried = api.client.post("/tasks/retry", params={"status": "failed", "created_before": cutoff})
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"retried": 3}
    wait_for(
        lambda: (
            servers.sql("SELECT count(*) FROM task_attempts WHERE task_id = ANY(%s)", (failing,))
            == [(6,)]
        ),
        what="the retried tasks to run again",
    )
    wait_finished(servers, 5)
    for task_id in failing:
        task = api.client.get(f"/tasks/{task_id}").json()
        assert task["status"] == "failed"
        assert [h["attempt"] for h in task["history"]] == [1, 2]
        assert task["max_attempts"] == 1 + 3  # the attempt used, and its 3 again
    assert len(api.client.get(f"/tasks/{late}").json()["history"]) == 1  # created after
    assert api.client.get(f"/tasks/{fine}").json()["status"] == "completed"
    assert api.client.post("/tasks/retry", params={"task_type": "FibonacciTask"}).json() == {
        "retried": 0
    }


def test_cancel_stops_pending_and_running_tasks_matching_the_filters(
    api: Api, workers: Workers
) -> None:
    servers = workers.servers
    low = [submit(api, "AsyncSleepTask", priority=1, seconds=30) for _ in range(3)]
    high = submit(api, "FibonacciTask", priority=5, n=2)
    # Nothing runs yet: the low-priority ones are pending.
    response = api.client.post("/tasks/cancel", params={"priority": 1, "status": "pending"})
    assert response.json() == {"cancelled": 3, "stopping": 0}
    running = submit(api, "AsyncSleepTask", seconds=30)
    workers.start(**FAST)
    wait_for(
        lambda: servers.sql("SELECT status FROM tasks WHERE id = %s", (running,)) == [("running",)],
        what="the sleeper to start",
    )
    response = api.client.post("/tasks/cancel", params={"task_type": "AsyncSleepTask"})
    assert response.json() == {"cancelled": 0, "stopping": 1}
    wait_finished(servers, 5)
    rows = dict(servers.sql("SELECT id, status FROM tasks"))
    assert [rows[i] for i in low] == ["cancelled"] * 3
    assert rows[running] == "cancelled"
    assert rows[high] == "completed"


def test_a_status_the_action_skips_is_422(api: Api, clean: Servers) -> None:
    for path, status in (("/tasks/retry", "pending"), ("/tasks/cancel", "completed")):
        response = api.client.post(path, params={"status": status})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "status"]
    bad = api.client.post("/tasks/cancel", params={"created_after": "yesterday"})
    assert bad.status_code == 422
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {"200", "422", "429", "503"} <= set(paths["/tasks/retry"]["post"]["responses"])


def test_the_schema_lists_only_the_statuses_each_action_takes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for path, statuses in (("/tasks/retry", RETRYABLE), ("/tasks/cancel", CANCELLABLE)):
        (status,) = [p for p in paths[path]["post"]["parameters"] if p["name"] == "status"]
        assert set(status["schema"]["anyOf"][0]["enum"]) == set(statuses)
        for name in ("created_before", "created_after"):
            (when,) = [p for p in paths[path]["post"]["parameters"] if p["name"] == name]
            assert when["schema"]["anyOf"][0] == {"type": "string", "format": "date-time"}


@pytest.mark.parametrize("when", ["0.5", "1700000000", "2026-01-31", "2026-01-31T12:00:00"])
def test_a_time_filter_is_an_rfc3339_instant_not_a_number(
    api: Api, clean: Servers, when: str
) -> None:
    response = api.client.post("/tasks/cancel", params={"created_before": when})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "created_before"]
    fine = api.client.post("/tasks/cancel", params={"created_before": "2026-01-31T12:00:00Z"})
    assert fine.json() == {"cancelled": 0, "stopping": 0}


def test_no_filter_and_a_body_are_refused_unless_everything_is_asked_for(
    api: Api, clean: Servers
) -> None:
    pending = [
        api.client.post(
            "/tasks/",
            json={"task_type": "FibonacciTask", "input_data": {"n": 1}, "delay_seconds": 60},
        ).json()["id"]
        for _ in range(2)
    ]
    # What an attacker review sent: ids in a body the route does not read, and no filter.
    refused = api.client.post("/tasks/cancel", json={"ids": [pending[0]]})
    assert refused.status_code == 422
    assert {tuple(e["loc"]) for e in refused.json()["detail"]} == {("body",), ("query",)}
    assert api.client.post("/tasks/retry").status_code == 422
    assert clean.sql("SELECT count(*) FROM tasks WHERE status = 'pending'") == [(2,)]
    everything = api.client.post("/tasks/cancel", params={"everything": "true"})
    assert everything.json() == {"cancelled": 2, "stopping": 0}
