"""taskq: its HTTP API (one request per task; POST /tasks/batch), its Python Client, its workers."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from bench import http_load
from bench.peers.base import BULK_CHUNK, Database, Kind, Peer, Unsupported, chunks
from bench.procs import Processes

TASK_TYPES: dict[Kind, str] = {"noop": "NoopTask", "fib": "Fib20Task"}
API_WORKERS = 2  # API processes: one per core
START_TIMEOUT = 60.0  # seconds for the API to answer /ready


def write_site(folder: Path) -> Path:
    """A folder that, on PYTHONPATH (with the repository), makes taskq see the bench plugin."""
    info = folder / "taskq_bench-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: taskq-bench\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[taskq.tasks]\nbench = bench.taskq_bench\n")
    return folder


def _taskq(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskq_core.cli", *args]


def api_command(port: int) -> tuple[list[str], str]:
    """`taskq api --workers N` where the product has it, else uvicorn's own --workers."""
    help_text = subprocess.run(_taskq("api", "--help"), capture_output=True, text=True).stdout
    if "--workers" in help_text:
        argv = _taskq("api", "--port", str(port), "--workers", str(API_WORKERS))
        return argv, f"taskq api --workers {API_WORKERS}"
    # `taskq_core.api:app` names the app.py submodule, not an app: the factory it is.
    argv = [sys.executable, "-m", "uvicorn", "--factory", "taskq_core.api:create_app"]
    argv += ["--port", str(port), "--workers", str(API_WORKERS), "--no-access-log"]
    argv += ["--log-level", "warning"]
    how = f"uvicorn --factory taskq_core.api:create_app --workers {API_WORKERS}"
    return argv, f"{how} (taskq api has no --workers)"


class Taskq(Peer):
    name = "taskq"
    label = "taskq (PostgreSQL record + Redis ids)"
    distributions = ("taskq-core", "fastapi", "uvicorn", "sqlalchemy", "psycopg", "redis")

    def prepare(self) -> None:
        from taskq_core.client import Client
        from taskq_core.db import engines
        from taskq_core.plugins import load_registry

        engines.upgrade(self.ctx.database_url)
        self.db = Database(self.ctx.database_url)
        self.redis = redis.Redis.from_url(self.ctx.redis_urls["queue"], socket_timeout=10)
        registry = load_registry()
        missing = {"NoopTask", "Fib20Task", "StampTask"} - {t.name for t in registry}
        if missing:
            raise RuntimeError(f"the bench plugin is not loaded: {sorted(missing)} missing")
        self.client = Client(
            redis_url=self.ctx.redis_urls["queue"],
            database_url=self.ctx.database_url,
            registry=registry,
        )
        self._batch_ok: bool | None = None
        self._start_api()

    def _start_api(self) -> None:
        port = int(self.ctx.options["api_port"])
        argv, self.api_how = api_command(port)
        self.api_url = f"http://127.0.0.1:{port}"
        env = {**self.ctx.env, "TASKQ_LOG_LEVEL": "WARNING"}
        self.api_procs = Processes(self.ctx.logs, self.ctx.procs.pgid_file)
        self.api_procs.spawn("taskq-api", argv, env)
        self.http = httpx.Client(base_url=self.api_url, timeout=10)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.api_procs.check()
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the taskq API did not get ready in {START_TIMEOUT:.0f}s")
            time.sleep(0.05)

    def close(self) -> None:
        super().close()
        self.api_procs.stop()
        self.http.close()
        self.client.close()
        self.db.close()

    def knobs(self) -> dict[str, Any]:
        opts = self.ctx.options
        return {
            "api": self.api_how,
            "worker": " ".join(["taskq-worker", *self._worker_argv()[4:]])
            + f" x {opts['taskq_workers']}",
            "python_client": "taskq_core.client.Client.enqueue (one transaction per task)",
            "fill": "POST /tasks/batch" if self._batch_ok else "Client.enqueue_in, one transaction",
        }

    def reset(self) -> None:
        self.db.truncate(keep=("alembic_version",))
        self.redis.flushdb()

    def sender(self, kind: Kind) -> Callable[[], object]:
        task_type, enqueue = TASK_TYPES[kind], self.client.enqueue
        return lambda: enqueue(task_type, {})

    def stamp_sender(self) -> Callable[[float], object]:
        # What users call: the HTTP API, one request per task, on a kept-alive connection of the
        # standard library's client (what urllib uses): httpx's own overhead per request, about
        # as long as the peers' whole enqueue call here, would be measured as taskq's otherwise.
        connection = http.client.HTTPConnection(urlsplit(self.api_url).netloc, timeout=10)
        headers = {"Content-Type": "application/json"}

        def send(t0: float) -> None:
            body = json.dumps({"task_type": "StampTask", "input_data": {"t0": t0}})
            connection.request("POST", "/tasks/", body, headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 201:
                raise RuntimeError(f"POST /tasks/ answered {response.status}: {answer[:200]!r}")

        return send

    def enqueue_async(self, kind: Kind, count: int, tasks: int) -> float:
        try:
            from taskq_core.async_client import AsyncClient
        except ImportError:
            raise Unsupported("— (no AsyncClient in this version)") from None

        task_type = TASK_TYPES[kind]

        async def main() -> float:
            async with AsyncClient(
                redis_url=self.ctx.redis_urls["queue"],
                database_url=self.ctx.database_url,
                registry=self.client.registry,
            ) as client:
                await client.enqueue(task_type, {})  # connect first, as a running app has
                self.reset()

                async def calls(share: int) -> None:
                    for _ in range(share):
                        await client.enqueue(task_type, {})

                shares = [count // tasks + (i < count % tasks) for i in range(tasks)]
                start = time.perf_counter()
                await asyncio.gather(*(calls(share) for share in shares))
                return time.perf_counter() - start

        return asyncio.run(main())

    def enqueue_http(self, seconds: int) -> dict[str, Any]:
        body = json.dumps({"task_type": "NoopTask", "input_data": {}}, separators=(",", ":"))
        if seconds >= 5:  # warm the API's pools first: a cold pool is not what users meet
            http_load.post_for(f"{self.api_url}/tasks/", body, 1)
            self._settle()
            self.reset()
        load = http_load.post_for(f"{self.api_url}/tasks/", body, seconds)
        self._settle()
        return load

    def _settle(self) -> None:
        """Wait for requests still in flight when the client stopped (at most 32) to land."""
        last, steady = -1, 0
        deadline = time.monotonic() + 30
        while steady < 3 and time.monotonic() < deadline:
            now = self.db.count("SELECT count(*) FROM tasks")
            steady = steady + 1 if now == last else 0
            last = now
            time.sleep(0.1)

    def enqueue_bulk(self, kind: Kind, count: int) -> None:
        item = {"task_type": TASK_TYPES[kind], "input_data": {}}
        for size in chunks(count, BULK_CHUNK):
            response = self.http.post("/tasks/batch", json={"tasks": [item] * size}, timeout=60)
            if response.status_code in (404, 405):
                self._batch_ok = False
                raise Unsupported(f"n/a: POST /tasks/batch answered {response.status_code}")
            response.raise_for_status()
            created = response.json()
            tasks = created.get("tasks", created) if isinstance(created, dict) else created
            if len(tasks) != size:
                raise RuntimeError(f"POST /tasks/batch created {len(tasks)} of {size}")
        self._batch_ok = True

    def fill(self, kind: Kind, count: int) -> None:
        if self._batch_ok is not False:
            try:
                self.enqueue_bulk(kind, count)
                return
            except Unsupported:
                self.reset()
        from sqlalchemy.orm import Session

        from taskq_core.db import engines

        engine = engines.sync_engine(self.ctx.database_url)
        try:
            with Session(engine) as session, session.begin():  # one transaction for all
                for _ in range(count):
                    self.client.enqueue_in(session, TASK_TYPES[kind], {})
        finally:
            engine.dispose()

    def queued(self) -> int:
        return self.db.count("SELECT count(*) FROM tasks WHERE status = 'pending'")

    def done(self) -> int:
        return self.db.count("SELECT count(*) FROM tasks WHERE status = 'completed'")

    def failed(self) -> int:
        return self.db.count("SELECT count(*) FROM tasks WHERE status = 'failed'")

    def _worker_argv(self) -> list[str]:
        opts, flags = self.ctx.options, []
        for flag in ("processes", "concurrency"):
            if opts.get(f"taskq_{flag}") is not None:
                flags += [f"--{flag}", str(opts[f"taskq_{flag}"])]
        return _taskq("worker", *flags)

    def start_workers(self) -> None:
        # At the product's default level (INFO: a line per task, into the logs folder), as users
        # run it; BENCH_TASKQ_WORKER_LOG_LEVEL=DEBUG adds the tuner's decisions.
        env = dict(self.ctx.env)
        level = os.environ.get("BENCH_TASKQ_WORKER_LOG_LEVEL")
        if level:
            env["TASKQ_LOG_LEVEL"] = level
        for i in range(int(self.ctx.options["taskq_workers"])):
            self.ctx.procs.spawn(f"taskq-worker-{i}", self._worker_argv(), env)


class TaskqBase(Taskq):
    """taskq's API and workers from another checkout (--taskq-base, e.g. a worktree of
    main): `--peers taskq,taskq-base` alternates old and new code in one invocation, on the same
    servers. The session itself (client, fill, counts) runs this checkout's code."""

    name = "taskq-base"

    def prepare(self) -> None:
        base = str(self.ctx.options.get("taskq_base") or "")
        if not (base and (Path(base) / "taskq_core").is_dir()):
            raise RuntimeError(f"--taskq-base must name a taskq checkout, not {base!r}")
        self.base = base
        path = self.ctx.env.get("PYTHONPATH", "").split(os.pathsep)
        # The site folder (the bench plugin) first, then the other checkout before this one. And
        # PYTHONSAFEPATH: `python -m taskq_core.cli` puts its current directory, this checkout,
        # before them all, so without it the API and the workers of `taskq-base` ran this
        # checkout's code (until 2026-11-29 they did: old against new compared new with itself).
        self.ctx.env = {
            **self.ctx.env,
            "PYTHONPATH": os.pathsep.join([path[0], base, *path[1:]]),
            "PYTHONSAFEPATH": "1",
        }
        ran = subprocess.run(
            [sys.executable, "-m", "taskq_core.cli", "--help"],
            env={**self.ctx.env, "PYTHONVERBOSE": "1"},
            capture_output=True,
            text=True,
        ).stderr
        own = f"{Path(base).resolve()}/taskq_core/__init__"
        if not any(own in line for line in ran.splitlines()):
            raise RuntimeError(f"taskq-base's processes would not run the code in {base}")
        rev = subprocess.run(
            ["git", "-C", base, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        self.label = f"taskq at {rev or base}"
        # The session's own calls (Client.enqueue, AsyncClient) from that checkout too: nothing
        # has imported taskq_core in this process yet.
        assert "taskq_core" not in sys.modules
        sys.path.insert(0, base)
        super().prepare()

    def knobs(self) -> dict[str, Any]:
        return {**super().knobs(), "source": self.base}

    def enqueue_async(self, kind: Kind, count: int, tasks: int) -> float:
        # The editable install would lend this checkout's module to the other one: a mixture.
        if not (Path(self.base) / "taskq_core" / "async_client.py").exists():
            raise Unsupported("— (no AsyncClient in this version)")
        return super().enqueue_async(kind, count, tasks)
