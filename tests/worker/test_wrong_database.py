"""A worker given the wrong database loses no task and says so: real worker processes, one
pointed at a database it cannot use, then one pointed right."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from taskq_core.client import Client
from taskq_core.db import engines
from tests.conftest import Processes, Servers, taskq, wait_for
from tests.worker.faults import QUEUE_KEYS

FAST = {"TASKQ_LEASE_SECONDS": "2", "TASKQ_SWEEP_INTERVAL_SECONDS": "0.5"}
WRONG_PASSWORD = "not-the-password-4711"  # must never reach a log line
TASK = ("AsyncSleepTask", {"seconds": 0})


def _with(url: str, *, database: str, password: str | None) -> str:
    """`url` naming `database`, with `password` (None: the one it has)."""
    parts = urlsplit(url)
    if password is None:
        password = parts.password
    netloc = f"{parts.username or 'postgres'}{f':{password}' if password else ''}@"
    netloc += f"{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


def _worker(processes: Processes, env: dict[str, str], name: str) -> tuple[int, Path]:
    proc = processes.spawn(
        taskq("worker", "--concurrency", "4", "--processes", "1", "--grace-seconds", "1"),
        env,
        name,
    )
    return proc.pid, processes.started[-1][1]


def _queued(servers: Servers) -> list[int]:
    with servers.redis() as client:
        return sorted(int(i) for key in QUEUE_KEYS for i in client.lrange(key, 0, -1))


def _enqueue(
    servers: Servers, count: int, site: Path, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    monkeypatch.syspath_prepend(str(site))  # the client validates with the testkit's types
    client = Client(redis_url=servers.redis_url, database_url=servers.database_url)
    try:
        return sorted(client.enqueue(*TASK) for _ in range(count))
    finally:
        client.close()


def _all_ran_once(servers: Servers, ids: list[int], worker_pid: int) -> None:
    """Every task completed, in one attempt, by the worker with pid `worker_pid`."""

    def done() -> bool:
        rows = servers.sql("SELECT count(*) FROM tasks WHERE status = 'completed'")
        return bool(rows[0][0] == len(ids))

    wait_for(done, timeout=60, what=f"the {len(ids)} tasks to complete")
    history = servers.sql(
        "SELECT task_id, attempt, outcome, split_part(worker_id, ':', 2)::int "
        "FROM task_attempts ORDER BY task_id"
    )
    assert history == [(i, 1, "completed", worker_pid) for i in ids]


@contextmanager
def _database(servers: Servers, *, revision: str | None) -> Iterator[str]:
    """A second database on the same server: reachable, but not the one the tasks are
    enqueued in; migrated to `revision` (None: no tables at all)."""
    name = f"taskq_other_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with(servers.database_url, database=name, password=None)
    try:
        if revision is not None:
            engines.upgrade(url, revision)
        yield url
    finally:
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def other_database(clean: Servers) -> Iterator[str]:
    with _database(clean, revision="head") as url:
        yield url


@pytest.fixture
def empty_database(clean: Servers) -> Iterator[str]:
    with _database(clean, revision=None) as url:
        yield url


@pytest.fixture
def outdated_database(clean: Servers) -> Iterator[str]:
    """Migrated up to API keys (0003): without the tables operations and progress added."""
    with _database(clean, revision="0003") as url:
        yield url


def test_a_worker_that_cannot_reach_its_database_pushes_popped_ids_back(
    clean: Servers,
    processes: Processes,
    sites: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = sites["taskq-testkit"]
    wrong = _with(clean.database_url, database="taskq_no_such_database", password=WRONG_PASSWORD)
    # DEBUG: the retries in between are visible, so "once per outage" is seen to hold.
    env = clean.env(site, TASKQ_DATABASE_URL=wrong, TASKQ_LOG_LEVEL="DEBUG", **FAST)
    wrong_pid, wrong_log = _worker(processes, env, "wrong-worker")
    wait_for(lambda: " started: " in wrong_log.read_text(), what="the worker to start")
    ids = _enqueue(clean, 6, site, monkeypatch)

    claiming = "(claiming tasks) "
    wait_for(lambda: "pushed back to Redis" in wrong_log.read_text(), what="the push-back")
    # It takes nothing more until the database answers: it probes the database instead.
    wait_for(
        lambda: wrong_log.read_text().count(claiming + "still unavailable") >= 3,
        what="three more failed attempts to reach the database",
    )
    assert _queued(clean) == ids, "the popped ids are not all back in Redis"
    text = wrong_log.read_text()
    lines = [line for line in text.splitlines() if claiming in line]
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) == 1, "\n".join(lines)  # once per outage, not once per retry
    (warning,) = warnings
    # The reason, and where it tried, without the password.
    assert "taskq_no_such_database" in warning, warning
    assert "unavailable (connection failed:" in warning, warning
    assert "does not exist" in warning or "password authentication failed" in warning, warning
    assert ":***@" in warning, warning
    assert WRONG_PASSWORD not in text
    assert "available again" not in "\n".join(lines)  # nothing it did reached the database
    assert clean.sql("SELECT count(*) FROM tasks WHERE status = 'pending'") == [(len(ids),)]

    right_pid, _ = _worker(processes, clean.env(site, **FAST), "right-worker")
    _all_ran_once(clean, ids, right_pid)
    assert processes.started[0][0].poll() is None, "the misconfigured worker exited"
    assert wrong_pid != right_pid


def test_a_worker_on_another_taskq_database_says_so_and_loses_nothing(
    clean: Servers,
    processes: Processes,
    sites: dict[str, Path],
    other_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = sites["taskq-testkit"]
    env = clean.env(site, TASKQ_DATABASE_URL=other_database, **FAST)
    _, wrong_log = _worker(processes, env, "wrong-worker")
    wait_for(lambda: " started: " in wrong_log.read_text(), what="the worker to start")
    ids = _enqueue(clean, 3, site, monkeypatch)

    # Its claims find no rows for the ids it popped: before, that was a DEBUG line.
    wait_for(lambda: "have no row in PostgreSQL at" in wrong_log.read_text(), what="the warning")
    (warning,) = [line for line in wrong_log.read_text().splitlines() if "have no row" in line]
    assert " WARNING " in warning, warning
    assert other_database.rsplit("/", 1)[1] in warning, warning
    password = urlsplit(clean.database_url).password
    if password:
        assert password not in wrong_log.read_text()
    processes.started[0][0].terminate()
    processes.started[0][0].wait(30)

    # A worker on the right database finds the tasks missing from Redis and runs them.
    right_pid, _ = _worker(processes, clean.env(site, **FAST), "right-worker")
    _all_ran_once(clean, ids, right_pid)


def test_a_worker_on_a_database_without_taskq_stops_and_says_why(
    clean: Servers,
    processes: Processes,
    sites: dict[str, Path],
    empty_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No tables: no outage to wait out but a mistake. The worker stops, non-zero (a
    supervisor sees a failure), naming the missing table; ids it popped are back in Redis."""
    site = sites["taskq-testkit"]
    env = clean.env(site, TASKQ_DATABASE_URL=empty_database, **FAST)
    args = taskq("worker", "--concurrency", "4", "--processes", "1")
    # Nothing queued: its background loops meet the missing tables first.
    code = processes.spawn(args, env, "idle-wrong-worker").wait(60)
    text = processes.started[-1][1].read_text()
    assert code != 0, text
    assert re.search(r"CRITICAL .* loop died .*relation \"[a-z_]+\" does not exist", text), text

    # Tasks queued: whichever meets the tables first, the claim or a loop, none is lost.
    ids = _enqueue(clean, 3, site, monkeypatch)
    code = processes.spawn(args, env, "wrong-worker").wait(60)
    text = processes.started[-1][1].read_text()
    assert code != 0, text
    assert _queued(clean) == ids, text

    right_pid, _ = _worker(processes, clean.env(site, **FAST), "right-worker")
    _all_ran_once(clean, ids, right_pid)


def test_a_worker_whose_loop_dies_exits_non_zero(
    clean: Servers, processes: Processes, sites: dict[str, Path], outdated_database: str
) -> None:
    """A database behind the worker's migrations: its sweeper's statements name a table the
    database lacks and the sweeper loop dies. The worker stops, and says so in its exit code
    (before, it exited 0, which a supervisor takes for a clean stop and does not restart)."""
    env = clean.env(sites["taskq-testkit"], TASKQ_DATABASE_URL=outdated_database, **FAST)
    proc = processes.spawn(taskq("worker", "--processes", "1"), env, "outdated-worker")
    code = proc.wait(60)
    text = processes.started[-1][1].read_text()
    assert re.search(r"CRITICAL .* sweeper loop died .*does not exist", text), text
    assert code == 1, text
