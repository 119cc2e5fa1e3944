"""`taskq demo`: random tasks of mixed priorities, worker processes, live progress, a summary."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from taskq_core import broker, enqueue
from taskq_core.cli import output
from taskq_core.cli.dev import servers_for, wait_until_serving
from taskq_core.cli.output import STATUS_STYLES
from taskq_core.db import engines
from taskq_core.db.storage import Storage
from taskq_core.errors import ConfigurationError
from taskq_core.plugins import load_registry
from taskq_core.processes import child_env, python_module, spawn, terminate
from taskq_core.records import NewTask, TaskStatus
from taskq_core.settings import Settings

DEMO_TYPE = "FibonacciTask"
BATCH = 500  # tasks per INSERT while seeding
REFRESH = 0.25  # seconds between progress updates


def random_tasks(count: int) -> list[NewTask]:
    """`count` Fibonacci tasks of random size and priority."""
    rng = random.Random()
    return [
        NewTask(
            task_type=DEMO_TYPE,
            input_data={"n": rng.randint(0, 2000)},
            priority=rng.randint(1, 5),
            max_attempts=1,
        )
        for _ in range(count)
    ]


def _port(preferred: int) -> int:
    """`preferred` if it is free here, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise ConfigurationError("no free port for the demo's API")


def run_demo(settings: Settings, *, tasks: int, workers: int, port: int = 8000) -> int:
    registry = load_registry()
    if DEMO_TYPE not in registry:
        raise ConfigurationError(
            f"the demo needs {DEMO_TYPE}: pip install -e plugins/taskq_fibonacci (known task "
            f"types: {registry.known_names()})"
        )
    console = output.console()
    with servers_for(settings, "demo") as (database_url, redis_url):
        engines.upgrade(database_url, prepare=settings.database_prepare)
        env = child_env(database_url, redis_url)
        port = _port(port)
        api_url = f"http://localhost:{port}"
        # An API too, so the dashboard can be watched while the tasks drain.
        commands = [python_module("taskq_core.cli", "api", "--port", str(port))]
        commands += [python_module("taskq_core.cli", "worker")] * workers
        procs = [
            spawn(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for command in commands
        ]
        try:
            wait_until_serving(procs[0], api_url)
            console.print(f"dashboard: {api_url}/ui  (API {api_url}, until the demo ends)")
            return asyncio.run(_drive(console, settings, database_url, redis_url, tasks, workers))
        finally:
            terminate(procs)


async def _drive(
    console: Console,
    settings: Settings,
    database_url: str,
    redis_url: str,
    count: int,
    workers: int,
) -> int:
    engine = engines.async_engine(database_url, pool_size=2, prepare=settings.database_prepare)
    redis = broker.connect(redis_url)
    storage = Storage(engine, settings.queue)
    queue = broker.Broker(redis, settings.queue)
    interrupted = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        started = time.monotonic()
        new = random_tasks(count)
        first_id: int | None = None
        for offset in range(0, count, BATCH):
            rows = await enqueue.submit(storage, queue, new[offset : offset + BATCH])
            first_id = rows[0]["id"] if first_id is None else first_id
        assert first_id is not None
        enqueued = time.monotonic() - started
        counts: dict[str, int] = {}
        with Live(console=console, refresh_per_second=8) as live:
            while not interrupted.is_set():
                counts = await storage.count_by_status(since_id=first_id - 1)
                live.update(_progress(counts, count, workers, time.monotonic() - started))
                if counts[TaskStatus.PENDING] + counts[TaskStatus.RUNNING] == 0:
                    break
                await asyncio.sleep(REFRESH)
        elapsed = time.monotonic() - started
        done = counts.get(TaskStatus.COMPLETED, 0) + counts.get(TaskStatus.FAILED, 0)
        console.print(
            f"[bold]{'interrupted' if interrupted.is_set() else 'done'}[/]: {done}/{count} tasks "
            f"finished in {elapsed:.2f}s ({done / elapsed:.0f} tasks/s) by {workers} worker(s); "
            f"enqueued in {enqueued:.2f}s; completed {counts.get(TaskStatus.COMPLETED, 0)}, "
            f"failed {counts.get(TaskStatus.FAILED, 0)}"
        )
        return 130 if interrupted.is_set() else (0 if done == count else 1)
    finally:
        await redis.aclose()
        await engine.dispose()


def _progress(counts: dict[str, int], total: int, workers: int, elapsed: float) -> Table:
    done = counts.get(TaskStatus.COMPLETED, 0) + counts.get(TaskStatus.FAILED, 0)
    table = Table(title=f"taskq demo: {total} tasks, {workers} workers", title_justify="left")
    for status in TaskStatus:
        table.add_column(status.value, justify="right", style=STATUS_STYLES.get(status, ""))
    table.add_column("rate", justify="right")
    table.add_column("elapsed", justify="right")
    table.add_row(
        *(str(counts.get(status, 0)) for status in TaskStatus),
        f"{done / elapsed:.0f}/s" if elapsed > 0 else "-",
        f"{elapsed:.1f}s",
    )
    return table
