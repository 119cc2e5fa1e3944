"""The fault-injection suite's harness (tests/test_faults.py): API and worker processes on servers
of the suite's own, what their tasks left behind, and the history check every scenario ends with.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from taskq_core.broker import PRIORITIES, queue_key
from taskq_core.records import worker_of
from tests.conftest import Processes, Servers, free_port, taskq, wait_for

LEASE_SECONDS = 2.0  # a killed worker's tasks come back within this plus a sweep interval
SWEEP_INTERVAL_SECONDS = 0.5
FINAL_OUTCOMES = ("completed", "failed", "cancelled")
LOG_TAIL_LINES = 80
REFUSAL_SECONDS = 5.0  # a POST while a backend is down is answered 503 within this
QUEUE_KEYS = [queue_key("default", p) for p in PRIORITIES]

T = TypeVar("T")


@dataclass
class ApiProcess:
    proc: subprocess.Popen[bytes]
    client: httpx.Client


@dataclass(frozen=True)
class Execution:
    """One start of a task, as the testkit's task types write it to the runs file."""

    task_id: int
    attempt: int
    worker_id: str


@dataclass(frozen=True)
class Attempt:
    """One row of `task_attempts`."""

    attempt: int
    outcome: str
    worker_id: str | None


@dataclass
class Harness:
    """Starts taskq processes on the fault suite's servers and remembers what the API accepted."""

    servers: Servers
    processes: Processes
    site: Path
    runs_file: Path
    accepted: list[int] = field(default_factory=list)  # ids of tasks the API answered 201 for
    refused: int = 0  # POSTs answered 503
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def embedded(self) -> Any:
        return self.servers.embedded

    # ---- processes ---------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        defaults = {
            "TASKQ_LEASE_SECONDS": f"{LEASE_SECONDS:g}",
            "TASKQ_SWEEP_INTERVAL_SECONDS": f"{SWEEP_INTERVAL_SECONDS:g}",
            "TASKQ_TEST_RUNS_FILE": str(self.runs_file),
        }
        return self.servers.env(self.site, **{**defaults, **extra})

    def start_api(self, **env: str) -> ApiProcess:
        port = free_port()
        proc = self.processes.spawn(taskq("api", "--port", str(port)), self.env(**env), "api")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15)
        self.clients.append(client)

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the API exited ({proc.returncode})\n{self.report()}")
            try:
                return client.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        self.wait(up, 30, "the API to start")
        return ApiProcess(proc, client)

    def start_worker(
        self, *, concurrency: int = 4, processes: int = 1, grace: float = 2.0, **env: str
    ) -> subprocess.Popen[bytes]:
        args = taskq(
            "worker",
            "--concurrency",
            str(concurrency),
            "--processes",
            str(processes),
            "--grace-seconds",
            f"{grace:g}",
        )
        return self.processes.spawn(args, self.env(**env), "worker")

    def worker_id(self, proc: subprocess.Popen[bytes]) -> str:
        """The id a worker process registered under (it beats once its runners are up)."""

        def registered() -> str | None:
            if proc.poll() is not None:
                pytest.fail(f"worker {proc.pid} exited ({proc.returncode})\n{self.report()}")
            rows = self.servers.sql("SELECT id FROM workers WHERE pid = %s", (proc.pid,))
            return str(rows[0][0]) if rows else None

        worker_id: str = self.wait(registered, 30, f"worker {proc.pid} to register")
        return worker_id

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        for started, log in self.processes.started:
            if started is proc:
                return log.read_text(errors="replace")
        raise KeyError(proc.pid)

    # ---- the API -----------------------------------------------------------------------------

    def post(self, api: ApiProcess, task_type: str, input_data: dict[str, Any], **body: Any) -> int:
        """Submit a task that must be accepted; remembered for the history check."""
        response = api.client.post(
            "/tasks/", json={"task_type": task_type, "input_data": input_data, **body}
        )
        assert response.status_code == 201, f"{response.status_code} {response.text}\n" + (
            self.report()
        )
        task_id: int = response.json()["id"]
        self.accepted.append(task_id)
        return task_id

    def post_refused(self, api: ApiProcess, backend: str) -> httpx.Response:
        """Submit a task that must be refused (503), and quickly, because `backend` is down."""
        started = time.monotonic()
        response = api.client.post(
            "/tasks/", json={"task_type": "AsyncSleepTask", "input_data": {"seconds": 0}}
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 503, f"{response.status_code} {response.text}\n" + (
            self.report()
        )
        detail = response.json()["detail"]
        assert f"{backend} is unavailable" in detail, detail
        assert "nothing was written" in detail, detail
        assert response.headers.get("retry-after") == "1"
        assert elapsed < REFUSAL_SECONDS, f"refused after {elapsed:.1f}s"
        self.refused += 1
        return response

    # ---- what the servers hold ---------------------------------------------------------------

    def executions(self) -> list[Execution]:
        """Every start of a testkit task, from the runs file ("task_id:attempt:worker_id")."""
        if not self.runs_file.exists():
            return []
        found = []
        for line in self.runs_file.read_text().splitlines():
            task_id, attempt, worker_id = line.split(":", 2)  # worker ids hold colons too
            found.append(Execution(int(task_id), int(attempt), worker_of(worker_id)))
        return found

    def histories(self) -> dict[int, list[Attempt]]:
        """Every task's attempt records, oldest first."""
        rows = self.servers.sql(
            "SELECT task_id, attempt, outcome, worker_id FROM task_attempts ORDER BY id"
        )
        found: dict[int, list[Attempt]] = {}
        for task_id, attempt, outcome, worker_id in rows:
            worker = worker_of(worker_id) if worker_id else None
            found.setdefault(task_id, []).append(Attempt(attempt, outcome, worker))
        return found

    def queued(self) -> list[int]:
        """Every id waiting in the queue's Redis lists."""
        with self.servers.redis() as client:
            return [int(i) for key in QUEUE_KEYS for i in client.lrange(key, 0, -1)]

    def count_tasks(self) -> int:
        count: int = self.servers.sql("SELECT count(*) FROM tasks")[0][0]
        return count

    # ---- waiting and failing -----------------------------------------------------------------

    def wait(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        """`wait_for`, failing with the processes' logs and the tables' state."""
        try:
            result: T = wait_for(predicate, timeout=timeout, interval=0.05, what=what)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n{self.report()}", pytrace=False)
        return result

    def report(self) -> str:
        """What to read when a scenario fails: the tables' state and each process's log tail."""
        parts = [self._state()]
        for proc, log in self.processes.started:
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            parts.append(
                f"--- {log.name} (pid {proc.pid}, exit code {proc.poll()}), "
                f"last {LOG_TAIL_LINES} of {len(lines)} lines:\n"
                + "\n".join(lines[-LOG_TAIL_LINES:])
            )
        return "\n".join(parts)

    def _state(self) -> str:
        try:
            counts = self.servers.sql(
                "SELECT status, count(*) FROM tasks GROUP BY status ORDER BY status"
            )
            open_tasks = self.servers.sql(
                "SELECT id, task_type, status, attempts, worker_id, lease_expires_at, enqueued_at "
                "FROM tasks WHERE status IN ('pending', 'running') ORDER BY id LIMIT 20"
            )
        except psycopg.Error as exc:
            return f"--- tables: unreadable ({exc})"
        lines = [f"--- tables: {dict(counts)}; accepted {len(self.accepted)}"]
        lines += [f"    unfinished: {row}" for row in open_tasks]
        return "\n".join(lines)


# The same in SQL: a task held by a worker or by one of its runners.
HELD_BY = "split_part(worker_id, '/', 1) = %s"


def check_history(h: Harness, *, timeout: float) -> dict[int, list[Attempt]]:
    """The promise, checked against what every process left behind; returns the histories.

    (a) every task the API accepted reaches exactly one final state (completed, here) and none
        is left pending or running;
    (b) every execution the tasks saw (the runs file) has an attempt record with its task and
        attempt number (a hand-back re-uses its attempt number, so per (task, attempt):
        records >= executions);
    (c) every completed task has exactly one `completed` attempt record;
    (d) no task the API refused (503) left a row: every row is one the API accepted;
    (e) every task's `attempts` matches its history.
    """

    def settled() -> bool:
        rows = h.servers.sql("SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')")
        return rows[0][0] == 0

    h.wait(settled, timeout, f"the {len(h.accepted)} accepted tasks to finish")
    statuses = dict(h.servers.sql("SELECT id, status FROM tasks"))
    accepted = set(h.accepted)
    assert len(accepted) == len(h.accepted), (
        f"the API handed out an id twice: {h.accepted}\n{h.report()}"
    )
    # (d) and (a): exactly the accepted tasks exist, all completed.
    missing = sorted(accepted - set(statuses))
    extra = sorted(set(statuses) - accepted)
    assert not missing, f"accepted tasks without a row: {missing}\n{h.report()}"
    assert not extra, (
        f"rows no 201 accounts for ({h.refused} POSTs were refused): {extra}\n{h.report()}"
    )
    unfinished = {i: s for i, s in statuses.items() if s != "completed"}
    assert not unfinished, f"tasks not completed: {unfinished}\n{h.report()}"
    histories = h.histories()
    # (a) and (c): one final record each, and it is the completed one.
    for task_id in accepted:
        finals = [a for a in histories.get(task_id, []) if a.outcome in FINAL_OUTCOMES]
        assert [a.outcome for a in finals] == ["completed"], (
            f"task {task_id}: final records {finals}; history {histories.get(task_id)}"
        )
    # (e): `attempts` matches the history: attempts 1..n each ended once (a hand-back re-uses its
    # attempt number and does not count).
    attempts = dict(h.servers.sql("SELECT id, attempts FROM tasks"))
    for task_id, count in attempts.items():
        counted = sorted(
            a.attempt for a in histories.get(task_id, []) if a.outcome != "handed_back"
        )
        assert counted == list(range(1, count + 1)), (
            f"task {task_id}: attempts {count}, history {histories.get(task_id)}\n{h.report()}"
        )
    # (b): no execution without its record.
    executions = Counter((e.task_id, e.attempt) for e in h.executions())
    records = Counter((i, a.attempt) for i, attempts in histories.items() for a in attempts)
    unrecorded = {
        key: (count, records[key]) for key, count in executions.items() if records[key] < count
    }
    assert not unrecorded, (
        f"(task, attempt): (executions, records) with fewer records than executions: "
        f"{unrecorded}\n{h.report()}"
    )
    assert {task_id for task_id, _ in executions} <= accepted
    return histories


# ---- processes seen through /proc -------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def descendants(pid: int) -> list[int]:
    """The live processes below `pid`: its children, theirs, and so on."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] != "Z":
                parents[int(entry)] = stat[1]
    found: list[int] = []
    level = [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found


def dead(pid: int) -> bool:
    """Whether `pid` has exited (an orphan nobody reaped yet lingers as a zombie: dead too)."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")
