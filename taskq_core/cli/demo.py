"""`taskq demo`: random tasks of mixed priorities, worker processes, live progress, a summary."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from taskq_core import broker, enqueue
from taskq_core.cli import demo_exports
from taskq_core.cli.dev import servers_for
from taskq_core.cli.render import STATUS_STYLES
from taskq_core.db import engines
from taskq_core.db.storage import Storage
from taskq_core.errors import ConfigurationError
from taskq_core.plugins import Registry, load_registry
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


def run_demo(
    settings: Settings, *, tasks: int, workers: int, export_rows: int = demo_exports.ROWS
) -> int:
    registry = load_registry()
    if DEMO_TYPE not in registry:
        raise ConfigurationError(
            f"the demo needs {DEMO_TYPE}: pip install -e plugins/taskq_fibonacci (known task "
            f"types: {registry.known_names()})"
        )
    console = Console()
    with servers_for(settings, "demo") as (database_url, redis_url):
        engines.upgrade(database_url, prepare=settings.database_prepare)
        if demo_exports.available() and export_rows > 0:
            demo_exports.configure(database_url)  # before the workers start: they inherit it
            registry = load_registry()
        procs = [
            spawn(
                python_module("taskq_core.cli", "worker"),
                env=child_env(database_url, redis_url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        try:
            return asyncio.run(
                _drive(
                    console,
                    settings,
                    registry,
                    database_url,
                    redis_url,
                    tasks,
                    workers,
                    export_rows,
                )
            )
        finally:
            terminate(procs)


async def _drive(
    console: Console,
    settings: Settings,
    registry: Registry,
    database_url: str,
    redis_url: str,
    count: int,
    workers: int,
    export_rows: int,
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
        exports = demo_exports.export_tasks(registry, export_rows)
        export_ids = (
            [row["id"] for row in await enqueue.submit(storage, queue, exports)] if exports else []
        )
        first_id: int | None = export_ids[0] if export_ids else None
        for offset in range(0, count, BATCH):
            rows = await enqueue.submit(storage, queue, new[offset : offset + BATCH])
            first_id = rows[0]["id"] if first_id is None else first_id
        assert first_id is not None
        enqueued = time.monotonic() - started
        counts: dict[str, int] = {}
        total = count + len(export_ids)
        with Live(console=console, refresh_per_second=8) as live:
            while not interrupted.is_set():
                counts = await storage.count_by_status(since_id=first_id - 1)
                view = _progress(counts, total, workers, time.monotonic() - started)
                if export_ids:
                    found = [await storage.get(task_id) for task_id in export_ids]
                    rows = [row for row in found if row is not None]
                    live.update(Group(view, demo_exports.bars(rows)))
                else:
                    live.update(view)
                if counts[TaskStatus.PENDING] + counts[TaskStatus.RUNNING] == 0:
                    break
                await asyncio.sleep(REFRESH)
        elapsed = time.monotonic() - started
        done = counts.get(TaskStatus.COMPLETED, 0) + counts.get(TaskStatus.FAILED, 0)
        console.print(
            f"[bold]{'interrupted' if interrupted.is_set() else 'done'}[/]: {done}/{total} tasks "
            f"finished in {elapsed:.2f}s ({done / elapsed:.0f} tasks/s) by {workers} worker(s); "
            f"enqueued in {enqueued:.2f}s; completed {counts.get(TaskStatus.COMPLETED, 0)}, "
            f"failed {counts.get(TaskStatus.FAILED, 0)}"
        )
        if export_ids:
            console.print(
                f"exports {', '.join(map(str, export_ids))}: their files are under "
                f"{demo_exports.artifacts_folder(settings)}/<task id>/1/"
            )
        return 130 if interrupted.is_set() else (0 if done == total else 1)
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
