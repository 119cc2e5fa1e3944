"""A task whose result is over the size the worker stores fails, saying why; the worker goes on.
(Outcomes PostgreSQL refuses, NUL characters, are tests/worker/test_bad_task.py's.)"""

from __future__ import annotations

from tests.conftest import Api, Servers, Workers, wait_finished


def test_a_result_over_the_limit_fails_the_task_and_nothing_else(
    api: Api, workers: Workers, clean: Servers
) -> None:
    bad = api.client.post(
        "/tasks/", json={"task_type": "HugeResultTask", "input_data": {}, "max_attempts": 3}
    ).json()["id"]
    good = api.client.post(
        "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": 10}}
    ).json()["id"]
    workers.start()
    wait_finished(clean, 2, timeout=60)
    task = api.client.get(f"/tasks/{bad}").json()
    assert task["status"] == "failed"
    assert task["attempts"] == 1  # the same result would be too large again: no retry
    assert task["error"]["type"] == "UnstorableResultError"
    assert "limit" in task["error"]["message"]
    assert api.client.get(f"/tasks/{good}").json()["result"] == {"result": 55}
