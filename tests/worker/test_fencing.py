"""Fencing, deterministically: a worker paused (SIGSTOP) past its lease can never overwrite what
happened to its task meanwhile, whether another worker finished it or a cancel ended it."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq_core.db import urls
from taskq_core.records import AttemptOutcome, Finish, TaskStatus
from taskq_core.worker.sql import Claims
from tests.conftest import Processes, Servers
from tests.worker.faults import FINAL_OUTCOMES, ApiProcess, Attempt, Harness

STALE = re.compile(r"not recorded: the task was no longer this worker's|was taken over after its")


@pytest.fixture
def harness(clean: Servers, sites: dict[str, Path], tmp_path: Path) -> Iterator[Harness]:
    h = Harness(clean, Processes(tmp_path), sites["taskq-testkit"], tmp_path / "runs")
    try:
        yield h
    finally:
        print(h.report())  # shown only when the test failed
        h.processes.kill_all()
        for client in h.clients:
            client.close()


def _status(h: Harness, task_id: int) -> str:
    status: str = h.servers.sql("SELECT status FROM tasks WHERE id = %s", (task_id,))[0][0]
    return status


def _paused_holding(
    h: Harness, seconds: float
) -> tuple[subprocess.Popen[bytes], str, int, ApiProcess]:
    """An API, a worker running one task of `seconds`, then stopped (SIGSTOP) mid-task."""
    paused = h.start_worker(concurrency=1)  # starting while the API does
    api = h.start_api()
    paused_id = h.worker_id(paused)
    task_id = h.post(api, "AsyncSleepTask", {"seconds": seconds})
    h.wait(
        lambda: any(e.task_id == task_id for e in h.executions()), 60, "the task to start running"
    )
    paused.send_signal(signal.SIGSTOP)
    return paused, paused_id, task_id, api


def _resume_and_wait_refused(h: Harness, paused: subprocess.Popen[bytes]) -> None:
    paused.send_signal(signal.SIGCONT)
    h.wait(lambda: STALE.search(h.log_of(paused)), 60, "the resumed worker to meet the fence")


def test_a_worker_paused_past_its_lease_cannot_overwrite_the_attempt_that_finished(
    harness: Harness,
) -> None:
    h = harness
    paused, paused_id, task_id, api = _paused_holding(h, seconds=1.5)
    try:
        # Its lease runs out while it is stopped; another worker takes the task and finishes it.
        other = h.start_worker(concurrency=1)
        other_id = h.worker_id(other)
        h.wait(lambda: _status(h, task_id) == "completed", 60, "the other worker to finish it")
        before = h.servers.sql(
            "SELECT status, attempts, worker_id, result, finished_at FROM tasks WHERE id = %s",
            (task_id,),
        )
    finally:
        _resume_and_wait_refused(h, paused)

    # The stale attempt's end changed nothing: one terminal outcome, the newer attempt's.
    after = h.servers.sql(
        "SELECT status, attempts, worker_id, result, finished_at FROM tasks WHERE id = %s",
        (task_id,),
    )
    assert after == before
    assert after[0][:3] == ("completed", 2, other_id)
    history = h.histories()[task_id]
    assert history == [Attempt(1, "lost", paused_id), Attempt(2, "completed", other_id)], history
    assert [a for a in history if a.outcome in FINAL_OUTCOMES] == [history[1]]
    starts = [(e.attempt, e.worker_id) for e in h.executions() if e.task_id == task_id]
    assert starts == [(1, paused_id), (2, other_id)]
    # The resumed worker is unharmed and takes work again.
    assert paused.poll() is None
    again = [h.post(api, "AsyncSleepTask", {"seconds": 0.3}) for _ in range(4)]
    h.wait(lambda: all(_status(h, i) == "completed" for i in again), 60, "tasks after the resume")


def test_a_worker_paused_while_a_cancel_arrives_cannot_overwrite_the_cancellation(
    harness: Harness,
) -> None:
    h = harness
    paused, paused_id, task_id, api = _paused_holding(h, seconds=30)
    try:
        response = api.client.post(f"/tasks/{task_id}/cancel")
        assert response.status_code == 202, response.text  # running: its worker is asked
        # Nobody hears the request; the lease runs out and the sweeper (another worker's) ends
        # the task as asked.
        other = h.start_worker(concurrency=1)
        h.worker_id(other)
        h.wait(lambda: _status(h, task_id) == "cancelled", 60, "the sweeper to cancel it")
        before = h.servers.sql(
            "SELECT status, attempts, worker_id, error, finished_at FROM tasks WHERE id = %s",
            (task_id,),
        )
    finally:
        _resume_and_wait_refused(h, paused)

    after = h.servers.sql(
        "SELECT status, attempts, worker_id, error, finished_at FROM tasks WHERE id = %s",
        (task_id,),
    )
    assert after == before
    status, attempts, worker_id, error, _ = after[0]
    assert (status, attempts, worker_id) == ("cancelled", 1, None)
    assert error["type"] == "LeaseExpiredError"
    # One attempt, recorded once, by the sweeper: the resumed worker's own ending was refused.
    assert h.histories()[task_id] == [Attempt(1, "lost", paused_id)]
    assert [e.task_id for e in h.executions()] == [task_id]  # it never ran again
    assert paused.poll() is None


def test_the_outcome_statement_refuses_a_stale_attempt(harness: Harness) -> None:
    """The fence itself, in the worker's own statements against real PostgreSQL: the holder of
    attempt 1 can neither renew nor finish once attempt 2 belongs to someone else."""
    h = harness
    (task_id,) = h.servers.sql(
        "INSERT INTO tasks (task_type, priority, input_data, max_attempts, enqueued_at) "
        "VALUES ('AsyncSleepTask', 3, '{}', 3, now()) RETURNING id"
    )[0]

    async def scenario() -> None:
        claims = Claims(urls.conninfo(h.servers.database_url))
        try:
            (first,), _ = await claims.claim([task_id], "stale", 60)
            # Its lease runs out (as the sweeper would find it) and it goes back to pending.
            h.servers.sql(
                "UPDATE tasks SET status = 'pending', worker_id = NULL, lease_expires_at = NULL "
                "WHERE id = %s",
                (task_id,),
            )
            (second,), _ = await claims.claim([task_id], "fresh", 60)
            assert (first.attempt, second.attempt) == (1, 2)
            stale_done = Finish(TaskStatus.COMPLETED, AttemptOutcome.COMPLETED, result={"a": 1})
            assert await claims.renew([task_id], "stale", 60) == {}
            assert await claims.finish("stale", [(first, stale_done)]) == set()
            # Even the right worker with the old attempt number is refused.
            assert await claims.finish("fresh", [(first, stale_done)]) == set()
            fresh_done = Finish(TaskStatus.COMPLETED, AttemptOutcome.COMPLETED, result={"b": 2})
            assert await claims.finish("fresh", [(second, fresh_done)]) == {task_id}
            assert await claims.finish("fresh", [(second, fresh_done)]) == set()  # only once
        finally:
            await claims.close()

    asyncio.run(scenario())
    rows = h.servers.sql("SELECT status, attempts, result FROM tasks WHERE id = %s", (task_id,))
    assert rows == [("completed", 2, {"b": 2})]
    assert h.histories()[task_id] == [Attempt(2, "completed", "fresh")]


def test_a_worker_paused_past_its_lease_that_gets_its_own_task_back_runs_the_new_attempt(
    harness: Harness,
) -> None:
    # The paused worker's pop waits in Redis and the only other worker is full, so the sweeper's
    # re-push of the lost task goes back to it: on resume it holds the stale attempt and the new
    # one of the same task.
    h = harness
    sweeper = h.start_worker(concurrency=1)  # sweeps, but is kept too busy to pop anything
    api = h.start_api()
    h.worker_id(sweeper)
    # Its event loop and its runner are busy.
    busy = [
        h.post(api, "AsyncSleepTask", {"seconds": 60}),
        h.post(api, "BlockingSleepTask", {"seconds": 60}),
    ]
    h.wait(lambda: {e.task_id for e in h.executions()} >= set(busy), 60, "the busy tasks to start")
    paused = h.start_worker(concurrency=2)
    paused_id = h.worker_id(paused)
    # Sync: its runner goes on while the worker is stopped, and ends during the new attempt.
    task_id = h.post(api, "BlockingSleepTask", {"seconds": 6}, max_attempts=2)
    h.wait(lambda: any(e.task_id == task_id for e in h.executions()), 60, "the task to start")
    paused.send_signal(signal.SIGSTOP)
    try:
        h.wait(
            lambda: h.servers.sql(
                "SELECT 1 FROM task_attempts WHERE task_id = %s AND outcome = 'lost'", (task_id,)
            ),
            60,
            "the sweeper to record the stalled attempt lost",
        )
    finally:
        paused.send_signal(signal.SIGCONT)

    h.wait(lambda: _status(h, task_id) in FINAL_OUTCOMES, 60, "the task to finish")
    history = h.servers.sql(
        "SELECT attempt, outcome, split_part(worker_id, '/', 1) FROM task_attempts "
        "WHERE task_id = %s ORDER BY attempt",
        (task_id,),
    )
    # The new attempt's lease was kept while it ran: it completed, on the worker that was paused.
    assert _status(h, task_id) == "completed", f"{history}\n{h.report()}"
    assert history == [(1, "lost", paused_id), (2, "completed", paused_id)]
