"""ctx.progress through real workers: stored at most a few times a second, visible in GET
/tasks/{id}, kept when the worker dies, reset by a retry, announced on the status channel."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from taskq_core.broker import status_channel
from tests.conftest import Api, Processes, Servers, Workers, wait_for
from tests.plugins.taskq_longwork import gate_key

# Counts the statements that store a progress, so a test can tell one write per report from a
# few per second. Installed by the test, in the test database only.
_COUNTER = """
CREATE TABLE IF NOT EXISTS test_progress_writes (n bigint NOT NULL);
DELETE FROM test_progress_writes;
INSERT INTO test_progress_writes VALUES (0);
CREATE OR REPLACE FUNCTION test_count_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE test_progress_writes SET n = n + 1; RETURN NULL; END $$;
DROP TRIGGER IF EXISTS test_count_progress ON tasks;
CREATE TRIGGER test_count_progress AFTER UPDATE OF progress ON tasks
FOR EACH STATEMENT EXECUTE FUNCTION test_count_progress();
"""


@pytest.fixture
def progress_writes(clean: Servers) -> Iterator[Servers]:
    clean.sql(_COUNTER)
    yield clean
    clean.sql("DROP TRIGGER IF EXISTS test_count_progress ON tasks")
    clean.sql("DROP FUNCTION IF EXISTS test_count_progress()")
    clean.sql("DROP TABLE IF EXISTS test_progress_writes")


@pytest.fixture
def long_workers(api: Api, clean: Servers, processes: Processes, sites: Any) -> Workers:
    return Workers(clean, processes, [sites["taskq-testkit"], sites["taskq-longwork"]])


def start(workers: Workers, api: Api, **env: str) -> Any:
    return workers.start(1, 4, TASKQ_ARTIFACTS_URL=str(api.artifacts), **env)


def submit(api: Api, task_type: str, input_data: dict[str, Any]) -> int:
    response = api.client.post("/tasks/", json={"task_type": task_type, "input_data": input_data})
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def task(api: Api, task_id: int) -> dict[str, Any]:
    response = api.client.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def open_gate(servers: Servers, task_id: int, attempt: int = 1) -> None:
    with servers.redis() as client:
        client.rpush(gate_key(task_id, attempt), "go")


def halfway(api: Api, task_id: int, reports: int) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        body = task(api, task_id)
        progress = body["progress"]
        if progress is not None and progress["message"] == "halfway":
            return body
        return None

    found: dict[str, Any] = wait_for(seen, what="the last progress report to be stored")
    assert found["status"] == "running"
    progress = found["progress"]
    assert progress["done"] == reports
    assert progress["total"] == 2 * reports
    assert progress["at"] is not None
    return found


@pytest.mark.parametrize("task_type", ["ProgressTask", "AsyncProgressTask"])
def test_many_reports_cost_a_few_writes_and_the_last_is_shown(
    api: Api, long_workers: Workers, progress_writes: Servers, task_type: str
) -> None:
    reports = 200_000
    task_id = submit(api, task_type, {"reports": reports})
    start(long_workers, api)
    halfway(api, task_id, reports)
    writes = progress_writes.sql("SELECT n FROM test_progress_writes")[0][0]
    # 200 000 reports in a tight loop take well under a few seconds; at 4 flushes a second the
    # statements number in the tens, never near one per report.
    assert 1 <= writes < 100, writes
    open_gate(progress_writes, task_id)
    done = wait_for(
        lambda: (body := task(api, task_id))["status"] == "completed" and body,
        what="the task to complete",
    )
    assert done["result"] == {"reports": reports}
    assert done["progress"]["message"] == "halfway"  # kept once finished


def test_progress_is_announced_on_the_status_channel(
    api: Api, long_workers: Workers, clean: Servers
) -> None:
    with clean.redis() as client, client.pubsub() as pubsub:
        pubsub.subscribe(status_channel("default"))
        wait_for(lambda: pubsub.get_message(timeout=1), what="the subscription")
        task_id = submit(api, "ProgressTask", {"reports": 10})
        start(long_workers, api)

        def announced() -> bool:
            message = pubsub.get_message(timeout=1)
            if message is None or message["type"] != "message":
                return False
            return [task_id, "running"] in json.loads(message["data"])

        wait_for(announced, what="a progress announcement")
        halfway(api, task_id, 10)
        open_gate(clean, task_id)


def test_a_retry_starts_from_zero(api: Api, long_workers: Workers, clean: Servers) -> None:
    task_id = submit(api, "ProgressTask", {"reports": 5, "fail_first": True})
    start(long_workers, api)
    # Attempt 2 waits at its gate before reporting anything: what shows is what the claim left.
    second = wait_for(
        lambda: (
            (body := task(api, task_id))["attempts"] == 2 and body["status"] == "running" and body
        ),
        what="the second attempt to start",
    )
    assert second["progress"] is None
    open_gate(clean, task_id, attempt=2)
    halfway(api, task_id, 5)
    open_gate(clean, task_id, attempt=2)
    wait_for(lambda: task(api, task_id)["status"] == "completed", what="the task to complete")


def test_the_last_progress_is_kept_when_the_worker_dies(
    api: Api, long_workers: Workers, clean: Servers
) -> None:
    task_id = submit(api, "ProgressTask", {"reports": 50})
    (worker,) = start(long_workers, api, TASKQ_LEASE_SECONDS="2", TASKQ_SWEEP_INTERVAL_SECONDS="1")
    before = halfway(api, task_id, 50)["progress"]
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    # A second worker's sweeper finds the lease expired and makes the task pending again; the
    # new attempt would reset progress, so it is looked at before anyone claims it.
    clean.sql("UPDATE tasks SET max_attempts = 1 WHERE id = %s", (task_id,))
    start(long_workers, api, TASKQ_LEASE_SECONDS="2", TASKQ_SWEEP_INTERVAL_SECONDS="1")
    failed = wait_for(
        lambda: (body := task(api, task_id))["status"] == "failed" and body,
        what="the sweeper to find the lost attempt",
    )
    assert failed["error"]["type"] == "LeaseExpiredError"
    assert failed["progress"] == before
