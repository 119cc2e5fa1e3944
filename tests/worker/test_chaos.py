"""The randomized chaos run (tests/worker/chaos.py) on servers of its own: 40 s of it here;
`make chaos SEED=n DURATION=s` for any other seed or length. TASKQ_TEST_CHAOS_REPORT names a file
to write the summary table to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskq_core.db import engines
from taskq_core.embedded import EmbeddedServers
from taskq_core.embedded.servers import DATABASE
from tests.conftest import EMPTY_TABLES, Processes, Servers, free_port, taskq, wait_for
from tests.worker.chaos import (
    KINDS,
    LEASE,
    RETENTION,
    Event,
    Fault,
    Ledger,
    Traffic,
    chaos_site,
    schedule,
)
from tests.worker.chaos_check import check, table
from tests.worker.chaos_net import Forwarder, Netns
from tests.worker.chaos_ops import Operator
from tests.worker.faults import descendants

SEED = int(os.environ.get("TASKQ_TEST_CHAOS_SEED", "1"))
DURATION = float(os.environ.get("TASKQ_TEST_CHAOS_SECONDS", "40"))
SETTLE_SECONDS = 180.0  # after the last fault, for every task to reach its end

# Every row deleted from these tables (by retention: the run's workers keep finished tasks for
# seconds) is copied, with when, so the checker sees the whole history and how retention chose.
KEEP_DELETED = {
    "tasks": "chaos_deleted_tasks",
    "task_attempts": "chaos_deleted_attempts",
    "schedule_ticks": "chaos_deleted_ticks",
}
KEEP_FUNCTION = """
    CREATE FUNCTION chaos_keep_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        EXECUTE format('INSERT INTO %I SELECT ($1).*, now()', TG_ARGV[0]) USING OLD;
        RETURN OLD;
    END $$
"""


@pytest.fixture(scope="module")
def chaos_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """PostgreSQL and Redis of this module's own: the run crashes and flushes them."""
    embedded = EmbeddedServers(tmp_path_factory.mktemp("chaos-servers"), durable=False)
    embedded.start()
    try:
        engines.upgrade(embedded.database_url)
        servers = Servers(embedded.database_url, embedded.redis_url, embedded)
        # As in the fault suite: commits that wait for their WAL write survive a crash.
        servers.sql(f"ALTER DATABASE {DATABASE} SET synchronous_commit = on")
        servers.sql(KEEP_FUNCTION)
        for table_name, copy in KEEP_DELETED.items():
            servers.sql(
                f"CREATE TABLE {copy} AS SELECT *, now() AS deleted_at FROM {table_name} "
                "WITH NO DATA"
            )
            servers.sql(
                f"CREATE TRIGGER keep_deleted AFTER DELETE ON {table_name} FOR EACH ROW "
                f"EXECUTE FUNCTION chaos_keep_deleted('{copy}')"
            )
        yield servers
    finally:
        embedded.stop()


class Fleet:
    """The API and the workers of the run, one of them in a network namespace."""

    def __init__(
        self, servers: Servers, processes: Processes, site: Path, runs: Path, ns: Netns
    ) -> None:
        self.servers, self.processes, self.site, self.runs, self.ns = (
            servers,
            processes,
            site,
            runs,
            ns,
        )
        self.port = free_port()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.in_ns: list[bool] = []
        self.api: subprocess.Popen[bytes] | None = None

    def env(self, *, inside: bool = False) -> dict[str, str]:
        env = self.servers.env(
            self.site,
            TASKQ_LEASE_SECONDS=f"{LEASE:g}",
            TASKQ_SWEEP_INTERVAL_SECONDS="0.5",
            TASKQ_TEST_RUNS_FILE=str(self.runs),
            **{f"TASKQ_RETENTION_{s.upper()}": f"{v:g}s" for s, v in RETENTION.items()},
        )
        if inside:
            env["TASKQ_DATABASE_URL"] = self.ns.url(self.servers.database_url)
            env["TASKQ_REDIS_URL"] = self.ns.url(self.servers.redis_url)
        return env

    def start_api(self) -> None:
        self.api = self.processes.spawn(taskq("api", "--port", str(self.port)), self.env(), "api")

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, what="the API to start")

    def start_worker(self, slot: int | None = None, *, inside: bool = False) -> None:
        args = taskq("worker", "--concurrency", "8", "--processes", "1", "--grace-seconds", "2")
        if inside:
            args = self.ns.prefix() + args  # `ip netns exec` execs: the pid is the worker's
        proc = self.processes.spawn(
            args, self.env(inside=inside), "worker-ns" if inside else "worker"
        )
        if slot is None:
            self.workers.append(proc)
            self.in_ns.append(inside)
        else:
            self.workers[slot] = proc


def _runner_of(worker: int) -> tuple[int, str] | None:
    """One of the worker's runner processes, a busy one if any: (pid, its title)."""
    runners = []
    for pid in descendants(worker):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if title.startswith("taskq-runner"):
            runners.append((pid, title.strip()))
    runners.sort(key=lambda runner: "[task" not in runner[1])
    return runners[0] if runners else None


def inject(fleet: Fleet, fault: Fault, number: int) -> Event:
    """Strike with `fault`; what happened, when, and to which worker processes."""
    embedded = fleet.servers.embedded
    slot = fault.target % len(fleet.workers)
    worker = fleet.workers[slot]
    struck: frozenset[int] | None = frozenset({worker.pid})
    detail = ""
    start = time.time()
    if fault.kind == "kill_worker":
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        end = time.time()
        fleet.start_worker(slot, inside=fleet.in_ns[slot])
    elif fault.kind == "kill_runner":
        runner = _runner_of(worker.pid)
        if runner is not None:
            os.kill(runner[0], signal.SIGKILL)
            detail = f"runner {runner[0]}: {runner[1]}"
        end = time.time()
    elif fault.kind == "pause_worker":
        worker.send_signal(signal.SIGSTOP)
        time.sleep(fault.length)
        worker.send_signal(signal.SIGCONT)
        end = time.time()
    elif fault.kind == "kill_api":
        assert fleet.api is not None
        fleet.api.send_signal(signal.SIGKILL)
        fleet.api.wait(10)
        struck = None
        fleet.start_api()
        end = time.time()
    elif fault.kind == "crash_postgres":
        embedded.kill_postgres()
        time.sleep(fault.length)
        embedded.start_postgres()
        struck, end = None, time.time()
    elif fault.kind == "flush_redis":
        with fleet.servers.redis() as client:
            client.flushall()
        struck, end = None, time.time()
    elif fault.kind == "restart_redis":
        embedded.stop_redis()
        time.sleep(fault.length)
        embedded.start_redis()
        struck, end = None, time.time()
    elif fault.kind == "cut_network":
        pairs = zip(fleet.workers, fleet.in_ns, strict=True)
        struck = frozenset(w.pid for w, inside in pairs if inside)
        fleet.ns.set_cut(True)
        time.sleep(fault.length)
        fleet.ns.set_cut(False)
        end = time.time()
    else:
        raise AssertionError(fault.kind)
    return Event(number, fault.kind, start, end, struck, detail)


def test_the_seed_reproduces_the_schedule() -> None:
    assert schedule(SEED, 600) == schedule(SEED, 600)
    assert schedule(SEED, 600) != schedule(SEED + 1, 600)
    kinds = {f.kind for f in schedule(SEED, 600)}
    assert len(kinds) == len(KINDS)  # ten minutes meet every kind of fault


@pytest.mark.timeout(DURATION + SETTLE_SECONDS + 300)
def test_chaos(
    chaos_servers: Servers,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    servers = chaos_servers
    servers.sql(EMPTY_TABLES)
    servers.sql(f"TRUNCATE {', '.join(KEEP_DELETED.values())}")
    with servers.redis() as client:
        client.flushall()
    faults = schedule(SEED, DURATION)
    events: list[Event] = []
    processes = Processes(tmp_path)
    site = chaos_site(tmp_path / "site")
    runs = tmp_path / "runs"
    pg_port = int(servers.database_url.rsplit(":", 1)[1].split("/")[0])
    redis_port = int(servers.redis_url.rsplit(":", 1)[1].split("/")[0])
    # The chaos task types, for Client.enqueue in this process (its registry reads sys.path).
    sys.path.insert(0, str(site))
    with Netns() as ns, Forwarder(ns.host_ip, [pg_port, redis_port]):
        fleet = Fleet(servers, processes, site, runs, ns)
        traffic: Traffic | None = None
        operator: Operator | None = None
        try:
            fleet.start_api()
            fleet.start_worker()
            fleet.start_worker()
            fleet.start_worker(inside=True)
            api_url = f"http://127.0.0.1:{fleet.port}"
            ledger = Ledger()
            traffic = Traffic(api_url, servers.database_url, servers.redis_url, SEED, ledger)
            operator = Operator(api_url, servers.database_url, SEED, ledger)
            operator.start()
            traffic.start()
            for number, fault in enumerate(faults, 1):
                time.sleep(max(0.0, ledger.started + fault.at - time.time()))
                events.append(inject(fleet, fault, number))
            time.sleep(max(0.0, ledger.started + DURATION - time.time()))
            traffic.finish()
            traffic = None
            ledger.notes.append(f"traffic stopped {ledger.at(time.time())} in")
            operator.finish()
            operations, operator = operator.done, None
            ledger.notes.append(f"the operator's last round ended {ledger.at(time.time())} in")

            stopped = time.monotonic()
            while time.monotonic() < stopped + SETTLE_SECONDS:  # the checker reports the rest
                rows = servers.sql(
                    "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')"
                )
                if rows[0][0] == 0:
                    break
                time.sleep(0.5)
            ledger.notes.append(f"every task ended {time.monotonic() - stopped:.1f} s later")
            verdict = check(servers, runs, ledger, operations, events, DURATION)
            for proc in fleet.workers:
                if proc.poll() is not None:
                    verdict.problem(
                        "workers", f"worker {proc.pid} exited by itself ({proc.returncode})"
                    )
        finally:
            if traffic is not None:
                traffic.finish()
            if operator is not None:
                operator.finish()
            servers.embedded.start_postgres()
            servers.embedded.start_redis()
            if ns.cut:
                ns.set_cut(False)
            processes.stop_all()
            sys.path.remove(str(site))
    summary = table(SEED, DURATION, faults, events, ledger, verdict)
    with capsys.disabled():
        print("\n" + summary)
    report = os.environ.get("TASKQ_TEST_CHAOS_REPORT")
    if report:
        Path(report).write_text(summary + "\n")
    assert ledger.kinds, "no task was accepted"
    assert not verdict.problems, summary
