"""Fixtures: real PostgreSQL and Redis (embedded, or TASKQ_TEST_* URLs); API and workers run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis

from taskq_core.db import engines, urls
from taskq_core.processes import spawn

# A developer's own TASKQ_* settings must not leak into the suite (TASKQ_TEST_* choose servers).
for _name in [n for n in os.environ if n.startswith("TASKQ_") and not n.startswith("TASKQ_TEST_")]:
    del os.environ[_name]

# Every table a test may fill, emptied at once (foreign keys: a TRUNCATE must name them together).
EMPTY_TABLES = (
    "TRUNCATE tasks, task_attempts, task_artifacts, artifact_deletions, workers, "
    "sweeper_leases, schedules, schedule_ticks, paused_task_types RESTART IDENTITY"
)

# How long `Processes.stop_all` lets processes exit on SIGTERM before SIGKILL.
STOP_SECONDS = 5.0

PLUGIN_SOURCES = Path(__file__).parent / "plugins"
# distribution -> (module file in tests/plugins, entry-point name)
TEST_PLUGINS = {
    "taskq-testkit": ("taskq_testkit", "testkit"),
    "taskq-broken": ("taskq_broken", "broken"),
    "taskq-dupe": ("taskq_dupe", "dupe"),
    "taskq-longwork": ("taskq_longwork", "longwork"),
    "taskq-cron": ("taskq_cron", "cron"),
}


def wait_for(
    predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_site(folder: Path, *distributions: str) -> Path:
    """A folder that, on PYTHONPATH, makes the given test plugins look pip-installed."""
    folder.mkdir(parents=True, exist_ok=True)
    for dist in distributions:
        module, entry = TEST_PLUGINS[dist]
        shutil.copy(PLUGIN_SOURCES / f"{module}.py", folder / f"{module}.py")
        info = folder / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[taskq.tasks]\n{entry} = {module}\n")
    return folder


@dataclass
class Servers:
    database_url: str
    redis_url: str
    embedded: Any = None  # EmbeddedServers when the suite started its own

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def env(self, *sites: Path, **extra: str) -> dict[str, str]:
        """An environment for a taskq process on these servers, with `sites` on its path."""
        env = dict(os.environ)
        env.update(
            TASKQ_DATABASE_URL=self.database_url,
            TASKQ_REDIS_URL=self.redis_url,
            TASKQ_LOG_LEVEL="INFO",
            PYTHONPATH=os.pathsep.join(str(s) for s in sites),
        )
        env.update(extra)
        return env


def redis_of_this_worker(url: str) -> str:
    """Under `pytest -n N` each worker flushes a Redis database of its own: the URL's database
    number plus the worker's index (gw0, gw1, ...). Embedded servers are each worker's own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or 0) + int(worker[2:])
    return urlunsplit(parts._replace(path=f"/{number}"))


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """PostgreSQL and Redis for the session: TASKQ_TEST_* URLs if set, else embedded servers."""
    base_db = os.environ.get("TASKQ_TEST_DATABASE_URL")
    redis_url = os.environ.get("TASKQ_TEST_REDIS_URL")
    if base_db and redis_url:
        redis_url = redis_of_this_worker(redis_url)
        # A database of our own on the given server, so a developer's data is never touched.
        name = f"taskq_test_{uuid.uuid4().hex[:8]}"
        base = urls.normalize_url(base_db).replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = base.rsplit("/", 1)[0] + f"/{name}"
        engines.upgrade(url)
        yield Servers(url, redis_url)
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        return
    from taskq_core.embedded import EmbeddedServers

    embedded = EmbeddedServers(tmp_path_factory.mktemp("servers"), durable=False)
    embedded.start()
    try:
        engines.upgrade(embedded.database_url)
        yield Servers(embedded.database_url, embedded.redis_url, embedded)
    finally:
        embedded.stop()


@pytest.fixture
def clean(servers: Servers) -> Servers:
    """Empty tables and an empty Redis before the test."""
    servers.sql(EMPTY_TABLES)
    with servers.redis() as client:
        client.flushdb()
    return servers


@pytest.fixture(scope="session")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sites")
    return {dist: make_site(root / dist, dist) for dist in TEST_PLUGINS}


@dataclass
class Processes:
    """Processes a test started; all are stopped at teardown."""

    logs: Path
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            # taskq's own spawn: a test run that is killed takes its processes along.
            proc = spawn(args, env=env, stdout=out, stderr=subprocess.STDOUT, new_session=False)
        self.started.append((proc, log))
        return proc

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for _, log in self.started)

    def stop_all(self, seconds: float = STOP_SECONDS) -> None:
        """SIGTERM to all, SIGKILL to what is still running `seconds` later (a worker lets its
        running tasks finish for up to its grace period, 20 s by default)."""
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + seconds
        for proc, _ in self.started:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill_all(self) -> None:
        """SIGKILL to all, and reap them: a test's end. A graceful stop takes a worker a second
        or two (its pop loop's timeout, its runners), a test's whole suite many times over; what
        a test checks of a graceful stop it checks itself. The runners and fork servers of a
        killed worker die with it (parent-death signals), and the next test empties the tables
        and Redis anyway."""
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
        for proc, _ in self.started:
            proc.wait()


def taskq(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskq_core.cli", *args]


def create_keys(env: dict[str, str], *commands: list[str]) -> list[str]:
    """`taskq keys create` with each list of arguments, all at once (each a Python start-up)."""
    running = [
        subprocess.Popen(
            taskq("keys", "create", *args),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    keys = []
    for proc in running:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        keys.append(out.strip())
    return keys


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.kill_all()


@dataclass
class Api:
    url: str
    client: httpx.Client
    log: Path
    artifacts: Path  # its TASKQ_ARTIFACTS_URL (workers of its tests need the same)


@pytest.fixture(scope="session")
def api_server(
    servers: Servers, sites: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One real API process for the session, with the testkit and a broken plugin installed."""
    port = free_port()
    folder = tmp_path_factory.mktemp("api")
    log = folder / "api.log"
    artifacts = folder / "artifacts"
    env = servers.env(
        sites["taskq-testkit"],
        sites["taskq-broken"],
        sites["taskq-longwork"],
        TASKQ_ARTIFACTS_URL=str(artifacts),
    )
    with log.open("wb") as out:
        proc = spawn(
            taskq("api", "--port", str(port)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            new_session=False,
        )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=10)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the API exited:\n{log.read_text()}")
        try:
            return client.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the API to start")
    yield Api(url, client, log, artifacts)
    client.close()
    proc.terminate()
    proc.wait(15)


@pytest.fixture
def api(api_server: Api, clean: Servers) -> Api:
    return api_server


@dataclass
class Workers:
    servers: Servers
    processes: Processes
    sites: list[Path]

    def start(
        self, count: int = 1, concurrency: int = 4, args: tuple[str, ...] = (), **env: str
    ) -> list[subprocess.Popen[bytes]]:
        return [
            self.processes.spawn(
                taskq("worker", "--concurrency", str(concurrency), *args),
                self.servers.env(*self.sites, **env),
                "worker",
            )
            for _ in range(count)
        ]


@pytest.fixture
def workers(clean: Servers, processes: Processes, sites: dict[str, Path]) -> Workers:
    """Start worker processes with the testkit plugin; stopped at teardown."""
    return Workers(clean, processes, [sites["taskq-testkit"]])


def wait_finished(servers: Servers, count: int, timeout: float = 30.0) -> None:
    """Wait until `count` tasks exist and none is pending or running."""

    def done() -> bool:
        rows = servers.sql(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'running')) FROM tasks"
        )
        return rows[0][0] >= count and rows[0][1] == 0

    wait_for(done, timeout=timeout, interval=0.05, what=f"{count} tasks to finish")
