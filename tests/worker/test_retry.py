"""`POST /tasks/{id}/retry`: failed and cancelled tasks run again, their history kept."""

from __future__ import annotations

from tests.conftest import Api, Servers, Workers, wait_for
from tests.worker.test_reliability import FAST, finished, outcomes, post


def test_a_failed_task_runs_again_with_its_attempts_counted_anew(
    api: Api, workers: Workers
) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": "FailTask", "input_data": {}, "max_attempts": 2})
    first = finished(api, task["id"])
    assert (first["status"], first["attempts"]) == ("failed", 2)
    assert outcomes(first) == ["retry", "failed"]

    response = api.client.post(f"/tasks/{task['id']}/retry")
    assert response.status_code == 200, response.text
    again = response.json()
    assert again["status"] in ("pending", "running", "failed")  # a worker may be quick
    second = finished(api, task["id"])
    assert second["status"] == "failed"
    assert second["attempts"] == 2  # counted anew: two more attempts, not zero
    assert outcomes(second) == ["retry", "failed", "retry", "failed"]
    assert [h["attempt"] for h in second["history"]] == [1, 2, 1, 2]  # type: ignore[attr-defined]


def test_a_cancelled_task_runs_when_retried(api: Api, workers: Workers, clean: Servers) -> None:
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 10}})
    assert api.client.post(f"/tasks/{task['id']}/cancel").json()["status"] == "cancelled"
    retried = api.client.post(f"/tasks/{task['id']}/retry").json()
    assert retried["status"] == "pending"
    assert (retried["attempts"], retried["finished_at"], retried["error"]) == (0, None, None)
    assert retried["cancel_requested_at"] is None
    with clean.redis() as client:
        # Pushed again: the id from its first submission is still there too, which the
        # conditional claim makes harmless.
        assert client.lrange("taskq:{default}:3", 0, -1).count(str(task["id"])) == 2
    workers.start(**FAST)
    done = finished(api, task["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"result": 55}
    assert outcomes(done) == ["completed"]


def test_only_failed_or_cancelled_tasks_can_be_retried(api: Api, workers: Workers) -> None:
    pending = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 3}})
    response = api.client.post(f"/tasks/{pending['id']}/retry")
    assert response.status_code == 409
    assert "pending" in response.json()["detail"]

    workers.start(**FAST)
    completed = finished(api, pending["id"])
    assert completed["status"] == "completed"
    response = api.client.post(f"/tasks/{pending['id']}/retry")
    assert response.status_code == 409
    assert "completed" in response.json()["detail"]
    assert api.client.get(f"/tasks/{pending['id']}").json()["history"] == completed["history"]

    running = post(api, {"task_type": "AsyncSleepTask", "input_data": {"seconds": 30}})
    wait_for(lambda: api.client.get(f"/tasks/{running['id']}").json()["status"] == "running")
    assert api.client.post(f"/tasks/{running['id']}/retry").status_code == 409

    assert api.client.post("/tasks/999999/retry").status_code == 404
    assert api.client.post("/tasks/0/retry").status_code == 422
