"""Retries, timeouts, delays, cancellation, idempotent enqueue, graceful shutdown, the outbox."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy.orm import Session

from taskq_core.broker import cancel_channel
from taskq_core.client import Client
from taskq_core.db import engines
from taskq_core.errors import InvalidTaskError
from tests.conftest import Api, Servers, Workers, wait_for

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}


def post(api: Api, body: dict[str, object], **headers: str) -> dict[str, object]:
    response = api.client.post("/tasks/", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    result: dict[str, object] = response.json()
    return result


def finished(api: Api, task_id: object, timeout: float = 20.0) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        task: dict[str, object] = api.client.get(f"/tasks/{task_id}").json()
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    result: dict[str, object] = wait_for(done, timeout=timeout, what=f"task {task_id} to finish")
    return result


def outcomes(task: dict[str, object]) -> list[str]:
    return [h["outcome"] for h in task["history"]]  # type: ignore[attr-defined,index]


def test_failures_are_retried_with_backoff_then_fail_with_every_error_kept(
    api: Api, workers: Workers
) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": "FailTask", "input_data": {"message": "flaky"}})
    done = finished(api, task["id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 3
    assert outcomes(done) == ["retry", "retry", "failed"]
    history = done["history"]
    assert all(h["error"]["message"] == "flaky" for h in history)  # type: ignore[attr-defined]
    assert done["error"]["type"] == "ValueError"  # type: ignore[index]


def test_max_attempts_from_the_request_overrides_the_type(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": "FailTask", "input_data": {}, "max_attempts": 1})
    done = finished(api, task["id"])
    assert done["attempts"] == 1
    assert outcomes(done) == ["failed"]


def test_a_task_can_ask_to_be_retried_later(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    task = post(
        api,
        {"task_type": "RetryTask", "input_data": {"after": 0.6, "succeed_on_attempt": 2}},
    )
    done = finished(api, task["id"])
    assert done["status"] == "completed"
    assert outcomes(done) == ["retry", "completed"]
    first, second = done["history"]  # type: ignore[misc]
    gap = datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(
        first["finished_at"]
    )
    assert gap >= timedelta(seconds=0.5)


def test_a_permanent_error_fails_at_once(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": "PermanentTask", "input_data": {}})
    done = finished(api, task["id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert done["error"]["type"] == "PermanentError"  # type: ignore[index]


@pytest.mark.parametrize("task_type", ["SpinTask", "AsyncSleepTask"])
def test_an_overrunning_task_is_stopped_and_the_worker_keeps_serving(
    api: Api, workers: Workers, task_type: str
) -> None:
    workers.start(concurrency=2, **FAST)
    task = post(
        api,
        {
            "task_type": task_type,
            "input_data": {"seconds": 30},
            "timeout_seconds": 0.5,
            "max_attempts": 2,
        },
    )
    started = time.monotonic()
    done = finished(api, task["id"])
    assert time.monotonic() - started < 15
    assert done["status"] == "failed"
    assert outcomes(done) == ["timeout", "timeout"]
    assert done["error"]["type"] == "TaskTimeoutError"  # type: ignore[index]
    after = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 12}})
    assert finished(api, after["id"])["result"] == {"result": 144}


def test_delayed_tasks_wait_then_run_promptly(api: Api, workers: Workers) -> None:
    workers.start(**FAST)
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    by_time = post(
        api, {"task_type": "FibonacciTask", "input_data": {"n": 1}, "run_at": at.isoformat()}
    )
    by_delay = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 2}, "delay_seconds": 1})
    # Neither starts before its time (the database's clock says so), and both do start. A
    # run_at is an instant of its own (the POST may take a while on a loaded machine); a delay
    # counts from the row's creation, on the database's clock.
    for task, earliest in (
        (by_time, lambda done: at),
        (by_delay, lambda done: datetime.fromisoformat(done["created_at"]) + timedelta(seconds=1)),
    ):
        done = finished(api, task["id"])
        assert done["status"] == "completed"
        started = datetime.fromisoformat(done["started_at"])  # type: ignore[arg-type]
        early = (earliest(done) - started).total_seconds()
        assert early <= 0.05, f"started {early:.3f}s before its time"


@pytest.mark.parametrize(
    "extra",
    [
        {"run_at": "2030-01-01T00:00:00", "delay_seconds": 1},
        {"run_at": "2030-01-01T00:00:00"},  # no time zone
        {"delay_seconds": -1},
        {"max_attempts": 0},
        {"timeout_seconds": 0},
    ],
)
def test_bad_scheduling_options_are_422(api: Api, clean: Servers, extra: dict[str, object]) -> None:
    body = {"task_type": "FibonacciTask", "input_data": {"n": 1}, **extra}
    assert api.client.post("/tasks/", json=body).status_code == 422
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_cancelling_a_pending_task_means_it_never_runs(api: Api, workers: Workers) -> None:
    task = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 5}})
    response = api.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    marker = post(api, {"task_type": "FibonacciTask", "input_data": {"n": 6}})
    workers.start(**FAST)
    finished(api, marker["id"])
    final = api.client.get(f"/tasks/{task['id']}").json()
    assert final["status"] == "cancelled"
    assert final["started_at"] is None
    assert final["history"] == []


@pytest.mark.parametrize("task_type", ["AsyncSleepTask", "SpinTask"])
def test_cancelling_a_running_task_stops_it(api: Api, workers: Workers, task_type: str) -> None:
    workers.start(**FAST)
    task = post(api, {"task_type": task_type, "input_data": {"seconds": 60}})
    wait_for(lambda: api.client.get(f"/tasks/{task['id']}").json()["status"] == "running")
    response = api.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested_at"] is not None
    done = finished(api, task["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert outcomes(done) == ["cancelled"]
    again = api.client.post(f"/tasks/{task['id']}/cancel")
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]
    assert api.client.post("/tasks/999999/cancel").status_code == 404


@pytest.mark.parametrize("task_type", ["AsyncSleepTask", "BlockingSleepTask"])
def test_another_installations_cancel_on_the_same_redis_server_is_ignored(
    api: Api, workers: Workers, clean: Servers, task_type: str
) -> None:
    # Pub/sub channels are the Redis server's, not its database's: an installation on another
    # database number of the same server publishes its own task ids on the same channel.
    workers.start(**FAST)
    task = post(api, {"task_type": task_type, "input_data": {"seconds": 2}})
    wait_for(lambda: api.client.get(f"/tasks/{task['id']}").json()["status"] == "running")
    other = redis.Redis.from_url(clean.redis_url.rsplit("/", 1)[0] + "/15")
    try:
        assert other.publish(cancel_channel("default"), task["id"]) >= 1  # the worker heard it
    finally:
        other.close()
    done = finished(api, task["id"], timeout=30)
    assert done["status"] == "completed"
    assert outcomes(done) == ["completed"]


def test_idempotency_key_replays_return_the_original(api: Api, clean: Servers) -> None:
    body = {"task_type": "FibonacciTask", "input_data": {"n": 7}, "priority": 2}
    first = api.client.post("/tasks/", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201
    replay = api.client.post(
        "/tasks/", json={"priority": 2, **body}, headers={"Idempotency-Key": "order-42"}
    )
    assert replay.status_code == 200
    assert replay.json() == first.json()
    other = api.client.post(
        "/tasks/", json={**body, "priority": 3}, headers={"Idempotency-Key": "order-42"}
    )
    assert other.status_code == 409
    assert "order-42" in other.json()["detail"]
    plain = api.client.post("/tasks/", json=body)
    assert plain.status_code == 201
    assert clean.sql("SELECT count(*) FROM tasks") == [(2,)]
    with clean.redis() as client:
        assert client.llen("taskq:{default}:2") == 2


def test_workers_are_listed_with_what_they_run(api: Api, workers: Workers) -> None:
    (proc,) = workers.start(args=("--processes", "2"), **FAST)
    task = post(api, {"task_type": "AsyncSleepTask", "input_data": {"seconds": 3}})

    def listed() -> list[dict[str, object]] | None:
        found = api.client.get("/workers").json()["workers"]
        return found if found and task["id"] in found[0]["running"] else None

    (worker,) = wait_for(listed, what="the worker to report its task")
    assert worker["pid"] == proc.pid
    assert worker["hostname"]
    assert worker["concurrency"] == 4 + 2  # its async limit (`--concurrency 4`), two runners


def test_sigterm_lets_short_tasks_finish_and_hands_back_long_ones(
    api: Api, workers: Workers, clean: Servers
) -> None:
    short = post(api, {"task_type": "AsyncSleepTask", "input_data": {"seconds": 0.3}})
    long = post(api, {"task_type": "AsyncSleepTask", "input_data": {"seconds": 30}})
    (first,) = workers.start(args=("--grace-seconds", "1"), **FAST)
    wait_for(
        lambda: clean.sql("SELECT count(*) FROM tasks WHERE status = 'running'") == [(2,)],
        what="both tasks to start",
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0, workers.processes.output()
    assert api.client.get(f"/tasks/{short['id']}").json()["status"] == "completed"
    handed = api.client.get(f"/tasks/{long['id']}").json()
    assert handed["status"] == "pending"
    assert handed["attempts"] == 0  # a hand-back does not use up an attempt
    assert outcomes(handed) == ["handed_back"]


def test_transactional_enqueue_exists_only_if_the_caller_commits(
    workers: Workers, clean: Servers
) -> None:
    engine = engines.sync_engine(clean.database_url)
    client = Client(redis_url=clean.redis_url, database_url=clean.database_url)
    try:
        with Session(engine) as session:
            client.enqueue_in(session, "FibonacciTask", {"n": 9})
            session.rollback()
        assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]
        with clean.redis() as redis:
            assert redis.keys("taskq:*") == []
        with Session(engine) as session, session.begin():
            task_id = client.enqueue_in(session, "FibonacciTask", {"n": 9}, priority=5)
            with clean.redis() as redis:  # not before the commit
                assert redis.llen("taskq:{default}:5") == 0
        with clean.redis() as redis:
            assert redis.lrange("taskq:{default}:5", 0, -1) == [str(task_id)]
        with pytest.raises(InvalidTaskError, match=r"input_data\.n"):
            client.enqueue("FibonacciTask", {"n": -3})
        workers.start(**FAST)
        wait_for(
            lambda: clean.sql("SELECT status, result FROM tasks") == [("completed", {"result": 34})]
        )
    finally:
        client.close()
        engine.dispose()
