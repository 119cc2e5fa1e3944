"""The whole flow through a real PgBouncer in transaction mode, with TASKQ_DATABASE_PREPARE=off."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from taskq_core.processes import spawn
from tests.conftest import Servers, free_port, taskq, wait_for
from tests.pgbouncer import pgbouncer

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}


@pytest.fixture
def bouncer(clean: Servers) -> Iterator[str]:
    with pgbouncer(clean.database_url) as url:
        yield url


def test_psycopgs_prepared_statements_break_on_this_pgbouncer(bouncer: str) -> None:
    """Why the setting exists: PgBouncer before 1.21 in transaction mode hands each transaction
    to any server connection, where a statement prepared on another one does not exist."""
    failures = 0
    connections = [psycopg.connect(bouncer, autocommit=True) for _ in range(6)]
    try:
        for _ in range(10):
            for conn in connections:
                try:
                    conn.execute("SELECT count(*) FROM tasks WHERE id > %s", (0,))
                except psycopg.errors.DatabaseError:
                    failures += 1
    finally:
        for conn in connections:
            conn.close()
    assert failures > 0
    connections = [psycopg.connect(bouncer, autocommit=True, prepare_threshold=None)]
    for _ in range(20):
        connections[0].execute("SELECT count(*) FROM tasks WHERE id > %s", (0,))
    connections[0].close()


def test_enqueue_drain_retries_sweeper_and_scheduler_through_pgbouncer(
    bouncer: str, clean: Servers, sites: dict[str, Path], tmp_path: Path
) -> None:
    env = clean.env(
        sites["taskq-testkit"],
        TASKQ_DATABASE_URL=bouncer,
        TASKQ_DATABASE_PREPARE="off",
        TASKQ_RETENTION_COMPLETED="45s",
        **FAST,
    )
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}-{len(logs)}.log"
        with log.open("wb") as out:
            proc = spawn(
                taskq(*args), env=env, stdout=out, stderr=subprocess.STDOUT, new_session=False
            )
        procs.append(proc)
        logs.append(log)
        return proc

    start("api", "api", "--port", str(port))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def up() -> bool:
        try:
            return client.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, what="the API through pgbouncer")
        # A task whose worker dies: the sweeper finds its lease expired and runs it elsewhere.
        first = start("worker", "worker", "--concurrency", "8")
        lost = client.post(
            "/tasks/", json={"task_type": "AsyncSleepTask", "input_data": {"seconds": 1}}
        ).json()["id"]
        wait_for(
            lambda: clean.sql("SELECT status FROM tasks WHERE id = %s", (lost,)) == [("running",)],
            what="the sleeper to start",
        )
        first.kill()
        first.wait(10)
        start("worker", "worker", "--concurrency", "8")
        start("worker", "worker", "--concurrency", "8")
        # Enqueue: single, idempotent, batch; a delayed one (the sweeper dispatches it).
        ids = [
            client.post(
                "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": i}}
            ).json()["id"]
            for i in range(60)
        ]
        batch = client.post(
            "/tasks/batch",
            json={"tasks": [{"task_type": "Fib20Task", "input_data": {}} for _ in range(100)]},
        )
        assert batch.status_code == 201, batch.text
        keyed = client.post(
            "/tasks/",
            json={"task_type": "FibonacciTask", "input_data": {"n": 3}},
            headers={"Idempotency-Key": "bouncer-1"},
        )
        assert keyed.status_code == 201
        delayed = client.post(
            "/tasks/",
            json={"task_type": "FibonacciTask", "input_data": {"n": 4}, "delay_seconds": 1},
        ).json()["id"]
        failing = client.post(
            "/tasks/", json={"task_type": "FailTask", "input_data": {"message": "again"}}
        ).json()["id"]
        schedule = client.post(
            "/schedules",
            json={
                "name": "bounced",
                "cron": "* * * * * *",
                "task_type": "FibonacciTask",
                "input_data": {"n": 2},
            },
        )
        assert schedule.status_code == 201, schedule.text

        client.post("/task-types/Fib20Task/pause")
        client.post("/task-types/Fib20Task/resume")

        def settled() -> bool:
            rows = clean.sql(
                "SELECT count(*) FILTER (WHERE status IN ('pending', 'running')), count(*) "
                "FROM tasks WHERE id NOT IN (SELECT task_id FROM schedule_ticks)"
            )
            return rows[0][0] == 0 and rows[0][1] == 164

        wait_for(settled, timeout=90, what="every task to finish through pgbouncer")
        wait_for(
            lambda: clean.sql("SELECT count(*) FROM schedule_ticks") >= [(3,)],
            what="the scheduler to fire through pgbouncer",
        )
        client.patch("/schedules/bounced", json={"paused": True})
        statuses = dict(
            clean.sql(
                "SELECT status, count(*) FROM tasks WHERE id NOT IN "
                "(SELECT task_id FROM schedule_ticks) GROUP BY status"
            )
        )
        assert statuses == {"completed": 163, "failed": 1}
        failed = client.get(f"/tasks/{failing}").json()
        assert [h["outcome"] for h in failed["history"]] == ["retry", "retry", "failed"]
        assert client.get(f"/tasks/{delayed}").json()["status"] == "completed"
        recovered = client.get(f"/tasks/{lost}").json()
        assert [h["outcome"] for h in recovered["history"]] == ["lost", "completed"]
        assert client.get(f"/tasks/{ids[-1]}").json()["status"] == "completed"
        bulk = client.post("/tasks/retry", params={"task_type": "FailTask"})
        assert bulk.json() == {"retried": 1}
        # The command line through it too: a migration run, a listing, a purge, keys.
        for args in (
            ("db", "upgrade"),
            ("schedules", "list"),
            ("tasks", "purge", "--older-than", "1d"),
            ("task-types", "paused"),
            ("keys", "list"),
        ):
            result = subprocess.run(taskq(*args), env=env, capture_output=True, text=True)
            assert result.returncode == 0, (args, result.stderr)
        output = "\n".join(log.read_text() for log in logs)
        assert "prepared statement" not in output
        assert "Traceback" not in output
        assert "lost its worker" in output
    finally:
        client.close()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait(20)
