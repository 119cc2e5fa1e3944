"""One bad task never stops or wedges a worker: it fails with the reason, the worker carries on."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api, Workers, wait_for

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}


def post(api: Api, task_type: str, input_data: dict[str, Any]) -> int:
    response = api.client.post("/tasks/", json={"task_type": task_type, "input_data": input_data})
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def finished(api: Api, task_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task: dict[str, Any] = api.client.get(f"/tasks/{task_id}").json()
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(done, timeout=30, what=f"task {task_id} to finish")
    return result


def test_outcomes_postgresql_refuses_fail_their_task_and_the_worker_carries_on(
    api: Api, workers: Workers
) -> None:
    (worker,) = workers.start(concurrency=4, **FAST)
    bad_result = post(api, "NulTask", {"where": "result"})
    bad_error = post(api, "NulTask", {"where": "error"})
    # Posted together, so some share a group commit with the bad ones.
    good = [post(api, "AsyncSleepTask", {"seconds": 0.2}) for _ in range(6)]

    for task_id, what in ((bad_result, "result"), (bad_error, "error")):
        task = finished(api, task_id)
        assert task["status"] == "failed", task
        assert task["attempts"] == 1  # the same values would be refused again: no retry
        assert task["error"]["type"] == "OutcomeRefusedError"
        assert f"PostgreSQL refused this attempt's {what}" in task["error"]["message"]
        assert "Unicode" in task["error"]["message"]  # PostgreSQL's own reason
        assert [h["outcome"] for h in task["history"]] == ["failed"]
    for task_id in good:
        assert finished(api, task_id)["status"] == "completed"
    # Still the same worker, still running and taking work.
    after = post(api, "AsyncSleepTask", {"seconds": 0})
    assert finished(api, after)["status"] == "completed"
    assert worker.poll() is None


def test_an_exception_in_the_workers_own_code_fails_the_task_instead_of_wedging_it(
    api: Api, workers: Workers
) -> None:
    (worker,) = workers.start(concurrency=2, **FAST)
    bad = post(api, "UnshowableErrorTask", {})
    task = finished(api, bad)
    assert task["status"] == "failed", task
    assert task["attempts"] == 1
    assert task["error"]["type"] == "WorkerError"
    assert "RuntimeError: this exception cannot be shown" in task["error"]["message"]
    assert [h["outcome"] for h in task["history"]] == ["failed"]
    # Its lease is no longer renewed by anyone, and the worker goes on.
    after = post(api, "AsyncSleepTask", {"seconds": 0})
    assert finished(api, after)["status"] == "completed"
    assert worker.poll() is None
