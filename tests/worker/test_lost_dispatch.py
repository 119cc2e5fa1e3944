"""A pending id missing from Redis is found and pushed again under a backlog and steady inflow."""

from __future__ import annotations

import threading

from taskq_core.broker import queue_key
from tests.conftest import Api, Servers, Workers, wait_for

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}
BACKLOG = 3000
GRACE = 2.0  # the sweeper's: ids pushed more recently than this are never judged lost
TASK = {"task_type": "AsyncSleepTask", "input_data": {"seconds": 0.05}, "priority": 5}


def test_a_lost_id_runs_in_its_turn_behind_a_backlog_under_inflow(
    api: Api, workers: Workers, clean: Servers
) -> None:
    ids: list[int] = []
    for _ in range(BACKLOG // 1000):
        response = api.client.post("/tasks/batch", json={"tasks": [TASK] * 1000})
        assert response.status_code == 201, response.text
        ids += [t["id"] for t in response.json()["tasks"]]
    lost = ids[0]  # the oldest: the next to pop
    with clean.redis() as client:
        assert client.lrem(queue_key("default", 5), 0, lost) == 1
    # Old enough that no push of it can still be on its way.
    wait_for(
        lambda: clean.sql(
            "SELECT 1 FROM tasks WHERE id = %s AND enqueued_at < now() - make_interval(secs => %s)",
            (lost, GRACE + 0.5),
        ),
        what="the lost id to be older than the grace period",
    )

    stop = threading.Event()
    inflow: list[int] = []

    def enqueue_steadily() -> None:  # five a second at the same priority, all along
        while not stop.wait(0.2):
            response = api.client.post("/tasks/", json=TASK)
            assert response.status_code == 201, response.text
            inflow.append(response.json()["id"])

    feeder = threading.Thread(target=enqueue_steadily, daemon=True)
    feeder.start()
    try:
        workers.start(concurrency=2, **FAST)  # about 40 tasks a second: the backlog lasts
        wait_for(
            lambda: clean.sql(
                "SELECT 1 FROM tasks WHERE id = %s AND status = 'completed'", (lost,)
            ),
            timeout=60,
            what="the lost task to run",
        )
    finally:
        stop.set()
        feeder.join(5)
    ((ran_before, attempts),) = clean.sql(
        "SELECT (SELECT count(*) FROM tasks o WHERE o.started_at < t.started_at), t.attempts"
        " FROM tasks t WHERE t.id = %s",
        (lost,),
    )
    # It ran near its turn, long before the thousands queued behind it, and once.
    assert ran_before < BACKLOG // 3, ran_before
    assert attempts == 1
    assert inflow, "the inflow never started"
    ((pending,),) = clean.sql("SELECT count(*) FROM tasks WHERE status = 'pending'")
    assert pending > BACKLOG // 3  # the backlog was still there when it ran
