"""The randomized chaos run (tests/worker/chaos.py) on servers of its own: 60 s of it here;
`make chaos SEED=n DURATION=s` for any other seed or length. TASKQ_TEST_CHAOS_REPORT names a file
to write the summary table to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskq_core.db import engines
from taskq_core.embedded import EmbeddedServers
from taskq_core.embedded.servers import DATABASE
from tests.conftest import EMPTY_TABLES, Processes, Servers, free_port, taskq, wait_for
from tests.worker.chaos import LEASE, Fault, Ledger, Traffic, schedule
from tests.worker.chaos_check import check, table
from tests.worker.chaos_net import Forwarder, Netns
from tests.worker.faults import Execution

SEED = int(os.environ.get("TASKQ_TEST_CHAOS_SEED", "1"))
DURATION = float(os.environ.get("TASKQ_TEST_CHAOS_SECONDS", "60"))
SETTLE_SECONDS = 180.0  # after the last fault, for every task to reach its end


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
            args = self.ns.prefix() + args
        proc = self.processes.spawn(
            args, self.env(inside=inside), "worker-ns" if inside else "worker"
        )
        if slot is None:
            self.workers.append(proc)
            self.in_ns.append(inside)
        else:
            self.workers[slot] = proc

    def executions(self) -> list[Execution]:
        if not self.runs.exists():
            return []
        found = []
        for line in self.runs.read_text().splitlines():
            task_id, attempt, worker_id = line.split(":", 2)
            found.append(Execution(int(task_id), int(attempt), worker_id))
        return found


def inject(fleet: Fleet, fault: Fault) -> None:
    embedded = fleet.servers.embedded
    slot = fault.target % len(fleet.workers)
    worker = fleet.workers[slot]
    if fault.kind == "kill_worker":
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        fleet.start_worker(slot, inside=fleet.in_ns[slot])
    elif fault.kind == "pause_worker":
        worker.send_signal(signal.SIGSTOP)
        time.sleep(fault.length)
        worker.send_signal(signal.SIGCONT)
    elif fault.kind == "kill_api":
        assert fleet.api is not None
        fleet.api.send_signal(signal.SIGKILL)
        fleet.api.wait(10)
        fleet.start_api()
    elif fault.kind == "crash_postgres":
        embedded.kill_postgres()
        time.sleep(fault.length)
        embedded.start_postgres()
    elif fault.kind == "flush_redis":
        with fleet.servers.redis() as client:
            client.flushall()
    elif fault.kind == "restart_redis":
        embedded.stop_redis()
        time.sleep(fault.length)
        embedded.start_redis()
    elif fault.kind == "cut_network":
        fleet.ns.set_cut(True)
        time.sleep(fault.length)
        fleet.ns.set_cut(False)
    else:
        raise AssertionError(fault.kind)


def test_the_seed_reproduces_the_schedule() -> None:
    assert schedule(SEED, 600) == schedule(SEED, 600)
    assert schedule(SEED, 600) != schedule(SEED + 1, 600)
    kinds = {f.kind for f in schedule(SEED, 600)}
    assert len(kinds) == 7  # ten minutes meet every kind of fault


@pytest.mark.timeout(DURATION + SETTLE_SECONDS + 180)
def test_chaos(
    chaos_servers: Servers,
    sites: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    servers = chaos_servers
    servers.sql(EMPTY_TABLES)
    with servers.redis() as client:
        client.flushall()
    faults = schedule(SEED, DURATION)
    ledger = Ledger()
    injected: Counter[str] = Counter()
    processes = Processes(tmp_path)
    pg_port = int(servers.database_url.rsplit(":", 1)[1].split("/")[0])
    redis_port = int(servers.redis_url.rsplit(":", 1)[1].split("/")[0])
    # The testkit's task types, for Client.enqueue in this process (its registry reads sys.path).
    sys.path.insert(0, str(sites["taskq-testkit"]))
    with Netns() as ns, Forwarder(ns.host_ip, [pg_port, redis_port]):
        fleet = Fleet(servers, processes, sites["taskq-testkit"], tmp_path / "runs", ns)
        traffic: Traffic | None = None
        try:
            fleet.start_api()
            fleet.start_worker()
            fleet.start_worker()
            fleet.start_worker(inside=True)
            traffic = Traffic(
                f"http://127.0.0.1:{fleet.port}",
                servers.database_url,
                servers.redis_url,
                SEED,
                ledger,
            )
            started = time.monotonic()
            traffic.start()
            for fault in faults:
                time.sleep(max(0.0, started + fault.at - time.monotonic()))
                inject(fleet, fault)
                injected[fault.kind] += 1
            time.sleep(max(0.0, started + DURATION - time.monotonic()))
            traffic.finish()
            traffic = None

            def settled() -> bool:
                rows = servers.sql(
                    "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')"
                )
                return rows[0][0] == 0

            wait_for(settled, timeout=SETTLE_SECONDS, interval=0.5, what="every task to end")
            verdict = check(servers, ledger, fleet.executions(), faults)
            for proc in fleet.workers:
                if proc.poll() is not None:
                    verdict.problem(f"worker {proc.pid} exited by itself ({proc.returncode})")
        finally:
            if traffic is not None:
                traffic.finish()
            servers.embedded.start_postgres()
            servers.embedded.start_redis()
            if ns.cut:
                ns.set_cut(False)
            processes.stop_all()
            sys.path.remove(str(sites["taskq-testkit"]))
    summary = table(SEED, DURATION, faults, injected, ledger, verdict)
    with capsys.disabled():
        print("\n" + summary)
    report = os.environ.get("TASKQ_TEST_CHAOS_REPORT")
    if report:
        Path(report).write_text(summary + "\n")
    assert ledger.kinds, "no task was accepted"
    assert not verdict.problems, summary
