"""Running for months: retention by the sweeper, purge and clear, pausing a task type."""

from __future__ import annotations

import subprocess

import psycopg
import pytest
from pydantic import ValidationError

from taskq_core.settings import Settings
from taskq_core.worker.sql.retention import _PURGE
from tests.conftest import Api, Processes, Servers, Workers, taskq, wait_finished, wait_for

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}


def finished_rows(servers: Servers, status: str, count: int, age: str, key: str = "") -> None:
    """`count` tasks of `status` finished `age` ago, each with one attempt row."""
    servers.sql(
        "WITH t AS (INSERT INTO tasks (task_type, priority, input_data, max_attempts, status, "
        "attempts, finished_at, idempotency_key) "
        "SELECT 'FibonacciTask', 3, '{}', 3, %(status)s, 1, now() - %(age)s::interval, "
        "CASE WHEN %(key)s = '' THEN NULL ELSE %(key)s || i END "
        "FROM generate_series(1, %(count)s) i RETURNING id) "
        "INSERT INTO task_attempts (task_id, attempt, outcome) SELECT id, 1, 'completed' FROM t",
        {"status": status, "count": count, "age": age, "key": key},
    )


def counts(servers: Servers) -> dict[str, int]:
    return dict(servers.sql("SELECT status, count(*) FROM tasks GROUP BY status"))  # type: ignore[arg-type]


def test_the_sweeper_deletes_finished_tasks_past_their_status_retention(
    api: Api, workers: Workers
) -> None:
    servers = workers.servers
    finished_rows(servers, "completed", 1200, "1 hour", key="old-")  # several batches
    finished_rows(servers, "completed", 3, "1 second")  # younger than the limit
    finished_rows(servers, "failed", 4, "1 hour")  # retention off
    finished_rows(servers, "cancelled", 5, "1 hour")  # younger than its 1d limit
    workers.start(
        **FAST,
        TASKQ_RETENTION_COMPLETED="10m",
        TASKQ_RETENTION_FAILED="off",
        TASKQ_RETENTION_CANCELLED="1d",
    )
    wait_for(lambda: counts(servers).get("completed") == 3, what="old completed tasks to go")
    assert counts(servers) == {"completed": 3, "failed": 4, "cancelled": 5}
    # Their attempt rows went with them, and so did their idempotency keys.
    assert servers.sql("SELECT count(*) FROM task_attempts") == [(12,)]
    replay = api.client.post(
        "/tasks/",
        json={"task_type": "FibonacciTask", "input_data": {"n": 3}},
        headers={"Idempotency-Key": "old-1"},
    )
    assert replay.status_code == 201  # a new task: the key expired with its row
    output = workers.processes.output()
    assert "retention: deleted 1200 completed task(s)" in output


def test_purge_deletes_at_once_by_age_and_status(clean: Servers) -> None:
    finished_rows(clean, "completed", 3, "8 days")
    finished_rows(clean, "failed", 2, "8 days")
    finished_rows(clean, "failed", 1, "1 day")
    env = clean.env()
    only_failed = subprocess.run(
        taskq("tasks", "purge", "--older-than", "7d", "--status", "failed"),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert only_failed.returncode == 0, only_failed.stderr
    assert only_failed.stdout.strip() == "deleted 2 failed task(s) finished more than 7d ago"
    assert counts(clean) == {"completed": 3, "failed": 1}
    every = subprocess.run(
        taskq("tasks", "purge", "--older-than", "12h"), env=env, capture_output=True, text=True
    )
    assert "deleted 4 completed/failed/cancelled task(s)" in every.stdout
    assert counts(clean) == {}
    bad = subprocess.run(
        taskq("tasks", "purge", "--older-than", "7 weeks"), env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "30d, 12h, 15m, 45s" in bad.stderr


def test_clear_keeps_pending_and_running_tasks_unless_told(clean: Servers) -> None:
    for status in ("pending", "completed", "failed", "running", "cancelled", "completed"):
        clean.sql(
            "INSERT INTO tasks (task_type, priority, input_data, max_attempts, status) "
            "VALUES ('FibonacciTask', 3, '{}', 3, %s)",
            (status,),
        )
    env = clean.env()
    cleared = subprocess.run(
        taskq("tasks", "clear", "3"), env=env, capture_output=True, text=True, check=False
    )
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.splitlines() == [
        "deleted the 3 oldest finished task(s)",
        "kept 2 older pending or running task(s); --include-unfinished deletes them too",
    ]
    assert clean.sql("SELECT id FROM tasks ORDER BY id") == [(1,), (4,), (6,)]
    everything = subprocess.run(
        taskq("tasks", "clear", "2", "--include-unfinished"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert everything.stdout.strip() == (
        "deleted the 2 oldest task(s), pending and running ones included"
    )
    assert clean.sql("SELECT id FROM tasks ORDER BY id") == [(6,)]


@pytest.mark.parametrize("value", ["7", "7w", "soon"])
def test_a_bad_retention_setting_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="30d, 12h, 15m, 45s or off"):
        Settings(retention_failed=value)


def submit(api: Api, task_type: str, **input_data: object) -> int:
    response = api.client.post("/tasks/", json={"task_type": task_type, "input_data": input_data})
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def statuses(servers: Servers, ids: list[int]) -> list[str]:
    rows = dict(servers.sql("SELECT id, status FROM tasks WHERE id = ANY(%s)", (ids,)))
    return [rows[i] for i in ids]


def test_a_paused_type_waits_while_the_rest_runs_and_resumes_after_restarts(
    api: Api, workers: Workers
) -> None:
    servers = workers.servers
    paused = api.client.post("/task-types/AsyncSleepTask/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    held = [submit(api, "AsyncSleepTask") for _ in range(3)]
    others = [submit(api, "FibonacciTask", n=5) for _ in range(3)]
    first = workers.start(**FAST)[0]
    wait_for(lambda: statuses(servers, others) == ["completed"] * 3, what="the other type to run")
    # The worker popped the paused type's ids and parked them in PostgreSQL: pending, not
    # started, and no longer in Redis (nothing is lost, nothing spins).
    wait_for(
        lambda: (
            servers.sql(
                "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND enqueued_at IS NULL", (held,)
            )
            == [(3,)]
        ),
        what="the paused type's tasks to be parked",
    )
    rows = servers.sql("SELECT status, attempts FROM tasks WHERE id = ANY(%s)", (held,))
    assert rows == [("pending", 0)] * 3
    with servers.redis() as client:
        assert all(client.llen(f"taskq:{{default}}:{p}") == 0 for p in range(1, 6))
    listed = {t["name"]: t for t in api.client.get("/task-types").json()["task_types"]}
    assert listed["AsyncSleepTask"]["paused"] is True
    assert listed["FibonacciTask"]["paused"] is False

    # A restart changes nothing: the pause is a row in PostgreSQL.
    first.terminate()
    first.wait(15)
    workers.start(**FAST)
    later = submit(api, "FibonacciTask", n=6)
    wait_for(lambda: statuses(servers, [later]) == ["completed"], what="the new worker to run")
    assert statuses(servers, held) == ["pending"] * 3

    resumed = api.client.post("/task-types/AsyncSleepTask/resume")
    assert resumed.json() == {"name": "AsyncSleepTask", "paused": False, "paused_at": None}
    wait_finished(servers, 7)
    assert statuses(servers, held) == ["completed"] * 3


def test_pausing_an_unknown_type_is_404_naming_the_known_ones(api: Api) -> None:
    response = api.client.post("/task-types/NoSuchTask/pause")
    assert response.status_code == 404
    assert "FibonacciTask" in response.json()["detail"]


def test_the_command_line_pauses_and_resumes(clean: Servers) -> None:
    env = clean.env()

    def cli(*args: str) -> str:
        result = subprocess.run(taskq(*args), env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert cli("task-types", "pause", "FibonacciTask") == "FibonacciTask paused\n"
    assert cli("task-types", "paused").splitlines()[1].startswith("FibonacciTask\t")
    assert cli("task-types", "resume", "FibonacciTask") == "FibonacciTask resumed\n"
    assert cli("task-types", "paused").splitlines() == ["task_type\tpaused_at"]


def test_the_retention_batch_reads_through_its_index_not_the_table(clean: Servers) -> None:
    clean.sql(
        "INSERT INTO tasks (task_type, priority, input_data, max_attempts, status, finished_at) "
        "SELECT 'FibonacciTask', 3, '{}', 3, CASE WHEN i % 20 = 0 THEN 'completed' ELSE "
        "'pending' END, CASE WHEN i % 20 = 0 THEN now() - interval '1 day' END "
        "FROM generate_series(1, 20000) i"
    )
    clean.sql("ANALYZE tasks")
    params = {"status": "completed", "age": 3600.0, "queue": "default", "limit": 500}
    with psycopg.connect(clean.database_url, cursor_factory=psycopg.ClientCursor) as conn:
        plan = "\n".join(
            row[0] for row in conn.execute(b"EXPLAIN " + _PURGE.encode(), params).fetchall()
        )
    assert "ix_tasks_finished" in plan, plan
    assert "Seq Scan on tasks" not in plan, plan


def test_a_retention_under_a_day_is_warned_about_at_start(
    workers: Workers, processes: Processes
) -> None:
    # An Idempotency-Key replayed after its task was deleted creates a new task: say so.
    workers.start(TASKQ_RETENTION_COMPLETED="45s")
    wait_for(
        lambda: "completed tasks are deleted after 45s, under a day" in processes.output(),
        what="the retention warning",
    )
