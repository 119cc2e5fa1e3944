"""Fault injection: real processes on servers of this module's own, really killed and stopped.

Each scenario breaks something (a worker, Redis, PostgreSQL, the API mid-request, a client
mid-transaction), lets taskq recover by itself, and ends with the same history check
(tests/faults.py): every accepted task completed exactly once, every execution is on record, and
nothing refused left a row. Leases of 2 s and sweeps every 0.5 s make recovery take seconds.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from taskq_core.broker import queue_key
from taskq_core.client import Client
from taskq_core.db import engines
from taskq_core.embedded import EmbeddedServers
from taskq_core.embedded.servers import DATABASE
from taskq_core.faults import FAULT_EXIT_CODE
from tests.conftest import EMPTY_TABLES, Processes, Servers
from tests.worker.faults import (
    HELD_BY,
    ApiProcess,
    Attempt,
    Harness,
    check_history,
    dead,
    descendants,
)


@pytest.fixture(scope="module")
def fault_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """PostgreSQL and Redis of this module's own: stopping them disturbs no other test."""
    embedded = EmbeddedServers(tmp_path_factory.mktemp("fault-servers"), durable=False)
    embedded.start()
    try:
        engines.upgrade(embedded.database_url)
        servers = Servers(embedded.database_url, embedded.redis_url, embedded)
        # durable=False turns synchronous_commit off, so a crash (kill_postgres) would lose the
        # last half second of acknowledged commits, tasks answered 201 among them: no queue can
        # keep its promise on such a database. A crashed server keeps what reached the kernel,
        # fsync or not, so commits that wait for their WAL write make it a production-like one.
        servers.sql(f"ALTER DATABASE {DATABASE} SET synchronous_commit = on")
        yield servers
    finally:
        embedded.stop()


def _servers_up(servers: Servers) -> None:
    # A scenario that failed half-way may have left one down; starting a running one is a no-op.
    servers.embedded.start_postgres()
    servers.embedded.start_redis()


@pytest.fixture
def harness(fault_servers: Servers, sites: dict[str, Path], tmp_path: Path) -> Iterator[Harness]:
    _servers_up(fault_servers)
    fault_servers.sql(EMPTY_TABLES)
    with fault_servers.redis() as client:
        client.flushall()
    h = Harness(fault_servers, Processes(tmp_path), sites["taskq-testkit"], tmp_path / "runs")
    try:
        yield h
    finally:
        _servers_up(fault_servers)
        # pytest shows a teardown's output only when the test failed: then every assertion,
        # however bare, comes with the tables' state and every process's log.
        print(h.report())
        h.processes.kill_all()
        for client in h.clients:
            client.close()


def _running_on(h: Harness, worker_id: str) -> dict[int, str]:
    rows = h.servers.sql(
        f"SELECT id, task_type FROM tasks WHERE status = 'running' AND {HELD_BY}", (worker_id,)
    )
    return {task_id: task_type for task_id, task_type in rows}


def _two_busy_workers(
    h: Harness, **post_options: Any
) -> tuple[ApiProcess, list[subprocess.Popen[bytes]], list[str]]:
    """An API and two workers with at least four of twelve 1 s sleeps (some sync) running."""
    procs = [h.start_worker(concurrency=4) for _ in range(2)]  # starting while the API does
    api = h.start_api()
    ids = [h.worker_id(p) for p in procs]
    for i in range(12):
        kind = "BlockingSleepTask" if i % 4 == 0 else "AsyncSleepTask"
        h.post(api, kind, {"seconds": 1.0}, **post_options)
    h.wait(lambda: sum(len(_running_on(h, w)) for w in ids) >= 4, 10, "tasks to be running")
    return api, procs, ids


def _claimed_since(h: Harness, after_id: int) -> set[str]:
    """Workers that claimed a task with an id above `after_id`."""
    rows = h.servers.sql(
        "SELECT DISTINCT worker_id FROM tasks WHERE id > %s AND worker_id IS NOT NULL "
        "UNION SELECT DISTINCT worker_id FROM task_attempts WHERE task_id > %s",
        (after_id, after_id),
    )
    return {row[0] for row in rows}


def _both_fetch_again(h: Harness, api: ApiProcess, worker_ids: list[str], timeout: float) -> None:
    """Keep work queued until every worker has claimed a task submitted from now on."""
    mark = max(h.accepted)

    def every_worker_claimed() -> bool:
        if len(h.queued()) < 2:
            for _ in range(4):
                h.post(api, "AsyncSleepTask", {"seconds": 0.3})
        return set(worker_ids) <= _claimed_since(h, mark)

    h.wait(every_worker_claimed, timeout, "every worker to fetch tasks again")


# ---- 1. a worker killed -------------------------------------------------------------------------


def test_a_killed_worker_loses_nothing_and_takes_its_runners_along(harness: Harness) -> None:
    h = harness
    api = h.start_api()
    # Interleaved: whichever worker is killed holds sync tasks (in runners) and async ones.
    for i in range(60):
        if i % 15 == 0:
            h.post(api, "BlockingSleepTask", {"seconds": 1.5})
        h.post(api, "AsyncSleepTask", {"seconds": 0.3})
    procs = [h.start_worker(concurrency=6, processes=2) for _ in range(2)]
    ids = [h.worker_id(p) for p in procs]

    def a_worker_mid_task() -> int | None:
        """Index (+1) of a worker running both kinds, a sync one started under a second ago (so
        it is still running when the kill lands)."""
        started = {(e.task_id, e.worker_id) for e in h.executions()}
        for index, worker_id in enumerate(ids):
            rows = h.servers.sql(
                "SELECT id, task_type, started_at > now() - interval '1 second' FROM tasks "
                f"WHERE status = 'running' AND {HELD_BY}",
                (worker_id,),
            )
            sync_started = [
                task_id
                for task_id, kind, recent in rows
                if kind == "BlockingSleepTask" and recent and (task_id, worker_id) in started
            ]
            if sync_started and any(kind == "AsyncSleepTask" for _, kind, _ in rows):
                return index + 1
        return None

    victim_index = h.wait(a_worker_mid_task, 15, "a worker to hold running tasks") - 1
    victim, victim_id = procs[victim_index], ids[victim_index]
    survivor, survivor_id = procs[1 - victim_index], ids[1 - victim_index]
    runners = descendants(victim.pid)  # the fork server and the 2 runners it forked
    assert len(runners) == 3, f"runners of {victim.pid}: {runners}\n{h.report()}"
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(5) == -signal.SIGKILL
    time.sleep(0.2)  # a statement the victim sent just before dying lands by now
    in_flight = _running_on(h, victim_id)
    assert "BlockingSleepTask" in in_flight.values(), in_flight
    # Its runners die with it (parent-death signal), mid-task.
    h.wait(lambda: all(dead(pid) for pid in runners), 5, f"runners {runners} to die")

    histories = check_history(h, timeout=30)
    for task_id in in_flight:
        history = histories[task_id]
        losses = [a for a in history if a.outcome == "lost"]
        assert len(losses) == 1, history
        assert losses[0].worker_id == victim_id, history
        last = history[-1]
        assert last.outcome == "completed", history
        assert last.worker_id == survivor_id, history
        assert last.attempt == losses[0].attempt + 1, history
    # Only what the victim held was lost; the survivor kept going throughout.
    lost_tasks = {
        i for i, history in histories.items() if any(a.outcome == "lost" for a in history)
    }
    assert lost_tasks == set(in_flight)
    assert survivor.poll() is None
    assert "lost its worker" in h.log_of(survivor)


# ---- 2. Redis emptied ---------------------------------------------------------------------------


def test_a_backlog_flushed_from_redis_is_pushed_again(harness: Harness) -> None:
    h = harness
    api = h.start_api()
    ids = [h.post(api, "AsyncSleepTask", {"seconds": 0}) for _ in range(200)]
    assert sorted(h.queued()) == ids
    with h.servers.redis() as client:
        client.flushall()
    assert h.queued() == []
    worker = h.start_worker(concurrency=10)

    histories = check_history(h, timeout=30)
    # Re-pushed by the sweeper's lost-dispatch repair, each run exactly once.
    repushed = re.findall(r"re-pushed (\d+) task id\(s\) missing", h.log_of(worker))
    assert sum(int(n) for n in repushed) >= len(ids), repushed
    assert Counter(e.task_id for e in h.executions()) == Counter(ids)
    assert {len(history) for history in histories.values()} == {1}


# ---- 3. Redis restarted -------------------------------------------------------------------------


def test_redis_restarted_during_a_run(harness: Harness) -> None:
    h = harness
    # While Redis is down a running task's own Redis write fails: it retries, later.
    api, procs, ids = _two_busy_workers(h, max_attempts=5)

    h.embedded.stop_redis()
    try:
        for _ in range(3):
            before = h.count_tasks()
            h.post_refused(api, "Redis")
            assert h.count_tasks() == before  # the row was taken back before the answer
        ready = api.client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["redis"].startswith("unavailable"), ready.json()
        assert ready.json()["postgresql"] == "ok", ready.json()
        # The tasks that were running find Redis gone too (their own write to it fails).
        h.wait(
            lambda: h.servers.sql("SELECT 1 FROM task_attempts WHERE outcome = 'retry'"),
            10,
            "a running task to meet the outage",
        )
    finally:
        h.embedded.start_redis()  # empty: durable=False keeps no append-only file

    h.wait(lambda: api.client.get("/ready").status_code == 200, 10, "the API to be ready")
    _both_fetch_again(h, api, ids, timeout=15)
    check_history(h, timeout=30)
    assert h.refused == 3
    assert all(p.poll() is None for p in procs), "a worker exited"


# ---- 4. PostgreSQL stopped or crashed ----------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_postgresql_down_during_a_run(harness: Harness, how: str) -> None:
    h = harness
    api, procs, ids = _two_busy_workers(h)

    down_at = time.monotonic()
    if how == "stop":
        h.embedded.stop_postgres()
    else:
        h.embedded.kill_postgres()
    try:
        for _ in range(3):
            h.post_refused(api, "PostgreSQL")
        ready = api.client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["postgresql"].startswith("unavailable"), ready.json()
        assert ready.json()["redis"] == "ok", ready.json()
        # Down for longer than a lease: the leases the workers hold lapse meanwhile.
        time.sleep(max(0.0, down_at + 2.5 - time.monotonic()))
    finally:
        h.embedded.start_postgres()

    up_at = h.servers.sql("SELECT now()")[0][0]
    h.wait(lambda: api.client.get("/ready").status_code == 200, 10, "the API to be ready")

    def beating_again() -> bool:
        rows = h.servers.sql("SELECT count(*) FROM workers WHERE last_beat_at > %s", (up_at,))
        return rows[0][0] == len(procs)

    h.wait(beating_again, 10, "every worker's heartbeat to resume")
    _both_fetch_again(h, api, ids, timeout=15)
    check_history(h, timeout=30)
    assert h.refused == 3
    assert all(p.poll() is None for p in procs), "a worker exited"
    for proc in procs:  # they noticed, and carried on by themselves, and said so once each way
        log = h.log_of(proc)
        assert log.count("(heartbeat: leases may lapse) unavailable") == 1, log
        h.wait(
            lambda proc=proc: "(heartbeat: leases may lapse) available again" in h.log_of(proc),
            10,
            "the heartbeat's recovery to be logged",
        )


# ---- 5. the API dying between commit and push --------------------------------------------------


def test_the_api_dying_between_commit_and_push(harness: Harness) -> None:
    h = harness
    faulty = h.start_api(TASKQ_FAULT="after_commit")
    key = {"Idempotency-Key": "order-1234"}
    body = {"task_type": "AsyncSleepTask", "input_data": {"seconds": 0}}
    with pytest.raises(httpx.HTTPError):
        faulty.client.post("/tasks/", json=body, headers=key)
    assert faulty.proc.wait(10) == FAULT_EXIT_CODE
    rows = h.servers.sql("SELECT id, status FROM tasks")
    assert len(rows) == 1, rows
    task_id, status = rows[0]
    assert status == "pending"
    h.accepted.append(task_id)  # committed: the promise covers it though no 201 came back
    assert h.queued() == []

    # The client's retry, to an API that survives, finds the task instead of making a twin.
    api = h.start_api()
    replay = api.client.post("/tasks/", json=body, headers=key)
    assert replay.status_code == 200, replay.text
    assert replay.json()["id"] == task_id
    h.start_worker()
    histories = check_history(h, timeout=20)
    assert [a.outcome for a in histories[task_id]] == ["completed"]


# ---- 6. SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_hands_back_long_tasks_and_a_second_one_exits_at_once(harness: Harness) -> None:
    h = harness
    grace = 3.0
    first = h.start_worker(concurrency=6, processes=2, grace=grace)  # starting while the API does
    api = h.start_api()
    first_id = h.worker_id(first)
    long_ones = [h.post(api, "AsyncSleepTask", {"seconds": 6.0}) for _ in range(2)]
    long_ones += [h.post(api, "BlockingSleepTask", {"seconds": 6.0}) for _ in range(2)]
    h.wait(lambda: len(_running_on(h, first_id)) == 4, 10, "the long tasks to run")
    short_ones = [h.post(api, "AsyncSleepTask", {"seconds": 2.0}) for _ in range(2)]
    h.wait(lambda: len(_running_on(h, first_id)) == 6, 10, "the short tasks to run")

    # Every slot is taken: the worker must act on the signal all the same, within the second
    # its fetch loop may take (worker.POP_TIMEOUT), not once a task happens to end.
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, h.report()
    log = h.log_of(first)
    stopping = re.search(r"^\S+ INFO \S+: worker \S+ stopping: (\d+) task", log, re.M)
    assert stopping, log
    # All six were still running when it began its grace period: it did not wait for one to end
    # and free a slot (the short ones end 2 s after they start, the long ones 6 s).
    assert stopping[1] == "6", (
        f"the worker began its grace period only once a task ended and freed a slot\n{log}"
    )
    # The short ones finished within the grace period; the long ones were not waited for.
    assert log.index("stopping: 6 task") < log.index("handed_back")
    # The long ones are handed back at once: pending, no attempt used up, pushed again.
    rows = h.servers.sql(
        "SELECT id, status, attempts, worker_id FROM tasks WHERE id = ANY(%s) ORDER BY id",
        (long_ones,),
    )
    assert rows == [(i, "pending", 0, None) for i in long_ones], rows
    assert sorted(h.queued()) == long_ones

    # A second worker takes them; two SIGTERMs in a row make it exit at once, mid-task.
    second = h.start_worker(concurrency=6, processes=2, grace=20.0)
    second_id = h.worker_id(second)
    h.wait(
        lambda: sum(e.worker_id == second_id for e in h.executions()) == 4,
        10,
        "the handed-back tasks to start again",
    )
    runners = descendants(second.pid)
    second.send_signal(signal.SIGTERM)
    h.wait(lambda: "stopping: 4 task(s) running" in h.log_of(second), 5, "the first SIGTERM")
    second.send_signal(signal.SIGTERM)
    assert second.wait(15) == 1, h.report()  # far sooner than its 20 s grace period
    h.wait(lambda: all(dead(pid) for pid in runners), 5, f"runners {runners} to die")
    assert set(_running_on(h, second_id)) == set(long_ones)  # until their leases run out
    third = h.start_worker(concurrency=6, processes=2)
    third_id = h.worker_id(third)

    histories = check_history(h, timeout=30)
    for task_id in short_ones:
        assert histories[task_id] == [Attempt(1, "completed", first_id)], histories[task_id]
    for task_id in long_ones:
        assert histories[task_id] == [
            Attempt(1, "handed_back", first_id),
            Attempt(1, "lost", second_id),
            Attempt(2, "completed", third_id),
        ], histories[task_id]
    attempts = h.servers.sql("SELECT DISTINCT attempts FROM tasks WHERE id = ANY(%s)", (long_ones,))
    assert attempts == [(2,)]


def _held_before_its_loop(
    h: Harness, *, seconds: float, count: int, grace: float = 2.0, **env: str
) -> tuple[list[int], subprocess.Popen[bytes]]:
    """`count` queued BlockingSleepTasks of `seconds`, and a worker with two runners held
    before its event loop starts (fault point worker_before_loop) until a signal it handles."""
    api = h.start_api()
    tasks = [h.post(api, "BlockingSleepTask", {"seconds": seconds}) for _ in range(count)]
    worker = h.start_worker(processes=2, grace=grace, TASKQ_FAULT="worker_before_loop", **env)
    return tasks, worker


def test_sigterm_before_the_worker_s_loop_runs_still_stops_its_early_runners_cleanly(
    harness: Harness,
) -> None:
    # The runners are forked, and claim, before the worker's event loop (and its signal
    # handlers) is up: a SIGTERM in that window must still be a graceful stop, not a death that
    # leaves their claims to lapse and costs each task an attempt. The fault point holds the
    # worker in that window until the signal comes (a lease long enough not to lapse meanwhile).
    h = harness
    tasks, worker = _held_before_its_loop(
        h, seconds=2.0, count=4, grace=20.0, TASKQ_LEASE_SECONDS="30"
    )
    h.wait(
        lambda: len(h.servers.sql("SELECT 1 FROM tasks WHERE status = 'running'")) == 2,
        10,
        "the early runners to claim a task each",
    )
    assert not h.servers.sql("SELECT 1 FROM workers WHERE pid = %s", (worker.pid,))  # no loop
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, h.report()
    rows = h.servers.sql(
        "SELECT status, attempts, count(*) FROM tasks WHERE id = ANY(%s) GROUP BY 1, 2 ORDER BY 1",
        (tasks,),
    )
    # The two that ran finished within the grace period; the two never claimed wait, untouched.
    assert rows == [("completed", 1, 2), ("pending", 0, 2)], rows
    assert len(h.queued()) == 2


def test_an_early_fork_server_killed_before_the_worker_s_loop_adopts_it_is_replaced(
    harness: Harness,
) -> None:
    # The fork server (and its runners) forked before the worker's loop runs may die before the
    # loop adopts it, its "ready" and its runners' answers already sent: the loop must start
    # another and new runners, not keep retrying forks on the dead one.
    h = harness
    tasks, worker = _held_before_its_loop(h, seconds=0.2, count=6)

    def early_processes() -> list[int] | None:
        found = descendants(worker.pid)
        return found if len(found) == 3 else None  # the fork server and its two runners

    early = h.wait(early_processes, 10, "the early fork server and runners")
    fork_server = next(
        pid for pid in early if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"taskq-fork")
    )
    os.kill(fork_server, signal.SIGKILL)
    h.wait(lambda: all(dead(pid) for pid in early), 5, "the early processes to die")
    worker.send_signal(signal.SIGUSR1)  # the loop starts now
    h.wait(
        lambda: (
            h.servers.sql(
                "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND status = 'completed'", (tasks,)
            )[0][0]
            == len(tasks)
        ),
        30,
        "every task to complete on new runners",
    )
    assert worker.poll() is None, h.report()
    assert "task runner fork server" in h.log_of(worker)
    assert not set(early) & set(descendants(worker.pid))


def test_a_handed_back_task_runs_next_not_behind_the_backlog(harness: Harness) -> None:
    # It had waited its turn already: handed back, it goes to the popping end of its list, ahead
    # of the tasks queued after it, instead of behind a backlog that may take hours.
    h = harness
    worker = h.start_worker(concurrency=1, grace=0.5)
    api = h.start_api()
    worker_id = h.worker_id(worker)
    running = h.post(api, "AsyncSleepTask", {"seconds": 30})
    h.wait(lambda: _running_on(h, worker_id) == {running: "AsyncSleepTask"}, 10, "it to run")
    backlog = [h.post(api, "AsyncSleepTask", {"seconds": 0}) for _ in range(3)]
    # Its only slot is taken: they wait in Redis (a claiming runner that pops them gives them
    # to the worker, which has no room, and they go back: so they may be away for a moment).
    h.wait(lambda: sorted(h.queued()) == backlog, 5, "the backlog to wait in Redis")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, h.report()
    assert h.histories()[running] == [Attempt(1, "handed_back", worker_id)]
    # LRANGE lists from the pushing end: the popping end is last.
    assert h.queued() == [*reversed(backlog), running]
    successor = h.start_worker(concurrency=1)
    successor_id = h.worker_id(successor)
    h.wait(lambda: running in _running_on(h, successor_id), 10, "it to run first")
    assert not [e for e in h.executions() if e.task_id in backlog]


# ---- 7. enqueue in the caller's transaction ------------------------------------------------------

OUTBOX_SCRIPT = """
import os
from sqlalchemy.orm import Session
from taskq_core.db import engines
from taskq_core.client import Client

url = os.environ["TASKQ_DATABASE_URL"]
client = Client(redis_url=os.environ["TASKQ_REDIS_URL"], database_url=url)
with Session(engines.sync_engine(url)) as session:
    task_id = client.enqueue_in(session, "AsyncSleepTask", {"seconds": 0})
    print(task_id, flush=True)
    session.commit()
print("still alive after the commit", flush=True)
"""


def test_a_crash_after_an_outbox_commit_is_repaired(harness: Harness) -> None:
    h = harness
    crashed = subprocess.run(
        [sys.executable, "-c", OUTBOX_SCRIPT],
        env=h.env(TASKQ_FAULT="outbox_after_commit"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == FAULT_EXIT_CODE, crashed.stdout + crashed.stderr
    task_id = int(crashed.stdout.split()[0])
    assert "still alive" not in crashed.stdout
    assert h.servers.sql("SELECT status FROM tasks WHERE id = %s", (task_id,)) == [("pending",)]
    assert h.queued() == []
    h.accepted.append(task_id)

    # In this process (FibonacciTask is installed here): a rollback leaves nothing behind, a
    # commit is pushed at once.
    engine = engines.sync_engine(h.servers.database_url)
    client = Client(redis_url=h.servers.redis_url, database_url=h.servers.database_url)
    try:
        with Session(engine) as session:
            client.enqueue_in(session, "FibonacciTask", {"n": 5})
            session.rollback()
        assert h.count_tasks() == 1
        assert h.queued() == []
        with Session(engine) as session:
            committed = client.enqueue_in(session, "FibonacciTask", {"n": 5})
            assert h.queued() == []  # not before the commit
            session.commit()
        priority = h.servers.sql("SELECT priority FROM tasks WHERE id = %s", (committed,))[0][0]
        with h.servers.redis() as redis_client:
            assert redis_client.llen(queue_key("default", priority)) == 1
        assert h.queued() == [committed]
        h.accepted.append(committed)
    finally:
        client.close()
        engine.dispose()

    h.start_worker()
    histories = check_history(h, timeout=20)
    assert [a.outcome for a in histories[task_id]] == ["completed"]
