"""Workers as real processes: running sync and async task types, priorities, sharing a backlog."""

from __future__ import annotations

import random
from collections import Counter

from tests.conftest import Api, Servers, Workers, wait_finished, wait_for
from tests.plugins.taskq_testkit import RUNS_KEY


def post(
    api: Api, task_type: str, input_data: dict[str, object], priority: int | None = None
) -> int:
    body: dict[str, object] = {"task_type": task_type, "input_data": input_data}
    if priority is not None:
        body["priority"] = priority
    response = api.client.post("/tasks/", json=body)
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def runs(servers: Servers) -> list[str]:
    with servers.redis() as client:
        return client.lrange(RUNS_KEY, 0, -1)


def test_the_readme_example_completes(api: Api, workers: Workers) -> None:
    # How fast is the benchmark's business (enqueue-to-start latency); here only that it does.
    workers.start()
    wait_for(lambda: api.client.get("/ready").status_code == 200)
    created = api.client.post(
        "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": 10}, "priority": 4}
    )
    assert created.status_code == 201
    assert created.json()["status"] == "pending"
    task_id = created.json()["id"]
    task = wait_for(
        lambda: (t := api.client.get(f"/tasks/{task_id}").json())["status"] == "completed" and t,
        what="the task to complete",
    )
    assert task["result"] == {"result": 55}
    assert task["started_at"] is not None
    assert task["finished_at"] is not None
    assert task["finished_at"] >= task["started_at"] >= task["created_at"]
    assert task["attempts"] == 1
    assert task["error"] is None


def test_async_tasks_run_concurrently_and_sync_ones_do_not_block_them(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # One worker, concurrency 8: a sync task blocks its thread for 2 s while 6 async tasks of
    # 1 s each run in the loop. Serially this takes 8 s; done right, every async task ends first.
    blocker = post(api, "BlockingSleepTask", {"seconds": 2.0}, priority=5)
    sleepers = [post(api, "AsyncSleepTask", {"seconds": 1.0}, priority=4) for _ in range(6)]
    workers.start(concurrency=8)
    wait_finished(clean, 7, timeout=20)
    order = [int(r.split(":")[0]) for r in runs(clean)]
    assert order[-1] == blocker, order
    assert sorted(order[:-1]) == sorted(sleepers)
    statuses = clean.sql("SELECT DISTINCT status FROM tasks")
    assert statuses == [("completed",)]
    # All six sleeps overlapped: they started within a fraction of their own duration.
    (spread,) = clean.sql(
        "SELECT extract(epoch FROM max(started_at) - min(started_at)) FROM tasks "
        "WHERE task_type = 'AsyncSleepTask'"
    )[0]
    assert spread < 0.9


def test_a_failing_task_stores_type_message_and_traceback(api: Api, workers: Workers) -> None:
    task_id = post(api, "FailTask", {"message": "the disk is on fire"})
    workers.start()
    task = wait_for(
        lambda: (t := api.client.get(f"/tasks/{task_id}").json())["status"] == "failed" and t
    )
    assert task["error"]["type"] == "ValueError"
    assert task["error"]["message"] == "the disk is on fire"
    assert "raise ValueError(data.message)" in task["error"]["traceback"]
    assert task["result"] is None
    assert task["finished_at"] is not None


def test_output_the_model_rejects_fails_the_task(api: Api, workers: Workers) -> None:
    # One attempt: retries, a second apart by default, would only fail the same way.
    created = api.client.post(
        "/tasks/", json={"task_type": "BadOutputTask", "input_data": {}, "max_attempts": 1}
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    workers.start()
    task = wait_for(
        lambda: (t := api.client.get(f"/tasks/{task_id}").json())["status"] == "failed" and t
    )
    assert task["error"]["type"] == "ValidationError"
    assert "slept" in task["error"]["message"]


def test_a_worker_without_the_plugin_fails_the_task_clearly(
    api: Api, workers: Workers, clean: Servers
) -> None:
    task_id = post(api, "AsyncSleepTask", {"seconds": 0})
    workers.sites = []  # this worker lacks taskq-testkit
    workers.start()
    task = wait_for(
        lambda: (t := api.client.get(f"/tasks/{task_id}").json())["status"] == "failed" and t
    )
    assert task["error"]["type"] == "UnknownTaskTypeError"
    assert "AsyncSleepTask" in task["error"]["message"]
    assert "install the plugin" in task["error"]["message"]


def test_one_worker_drains_strictly_by_priority_then_fifo(
    api: Api, workers: Workers, clean: Servers
) -> None:
    rng = random.Random(7)
    created = [post(api, "FibonacciTask", {"n": i}, priority=rng.randint(1, 5)) for i in range(40)]
    workers.start(concurrency=1)
    wait_finished(clean, len(created))
    # A claim of several ids gives them one started_at; they run in pop order (one priority).
    rows = clean.sql("SELECT id, priority FROM tasks ORDER BY started_at, id")
    expected = sorted(rows, key=lambda row: (-row[1], row[0]))
    assert rows == expected
    assert {p for _, p in rows} == {1, 2, 3, 4, 5}


def test_three_workers_share_a_backlog_and_never_run_a_task_twice(
    api: Api, workers: Workers, clean: Servers
) -> None:
    # All three are up and idle before the backlog arrives: a worker that starts late could
    # otherwise find it already drained.
    workers.start(count=3, concurrency=4)
    wait_for(lambda: len(api.client.get("/workers").json()["workers"]) == 3, what="3 workers up")
    # One request: the whole backlog is there at once, for the three to compete over.
    batch = [{"task_type": "AsyncSleepTask", "input_data": {"seconds": 0.01}}] * 300
    response = api.client.post("/tasks/batch", json={"tasks": batch})
    assert response.status_code == 201, response.text
    ids = [task["id"] for task in response.json()["tasks"]]
    with clean.redis() as client:  # every id a second time: duplicates must be harmless
        client.lpush("taskq:{default}:2", *ids)
    wait_finished(clean, len(ids))
    wait_for(lambda: len(runs(clean)) >= len(ids))
    executions = Counter(int(r.split(":")[0]) for r in runs(clean))
    assert sorted(executions) == sorted(ids)
    assert set(executions.values()) == {1}
    assert clean.sql("SELECT DISTINCT status, attempts FROM tasks") == [("completed", 1)]
    (busy_workers,) = clean.sql("SELECT count(DISTINCT worker_id) FROM tasks")[0]
    assert busy_workers == 3


def test_workers_log_one_line_per_task(api: Api, workers: Workers, clean: Servers) -> None:
    ids = [post(api, "FibonacciTask", {"n": 5}) for _ in range(3)] + [post(api, "FailTask", {})]
    workers.start()
    wait_finished(clean, len(ids))
    workers.processes.stop_all()
    output = workers.processes.output()
    for task_id in ids[:3]:
        assert output.count(f"task {task_id} FibonacciTask completed") == 1
    assert output.count(f"task {ids[3]} FailTask failed") == 1
    assert "ValueError: boom" in output
