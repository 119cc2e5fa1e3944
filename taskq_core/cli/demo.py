"""`taskq demo`: random tasks of mixed priorities, worker processes, live progress, a summary;
then the dashboard stays up until Ctrl-C (or `--exit`)."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import time
from types import FrameType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from taskq_core import broker, enqueue
from taskq_core.cli import demo_exports, output
from taskq_core.cli.dev import servers_for, wait_until_serving
from taskq_core.cli.output import STATUS_STYLES
from taskq_core.db import engines
from taskq_core.db.storage import Storage
from taskq_core.errors import ConfigurationError, TaskqError
from taskq_core.plugins import Registry, load_registry
from taskq_core.processes import child_env, python_module, spawn, terminate
from taskq_core.records import NewTask, TaskStatus
from taskq_core.settings import Settings

DEMO_TYPE = "FibonacciTask"
BATCH = 500  # tasks per INSERT while seeding
REFRESH = 0.25  # seconds between progress updates
INTERRUPTED = 130  # the exit code of a demo stopped before its tasks finished


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


def run_demo(
    settings: Settings,
    *,
    tasks: int,
    workers: int,
    port: int = 8000,
    export_rows: int = demo_exports.ROWS,
    serve: bool = True,
) -> int:
    """Run the demo; with `serve`, keep the API, dashboard and workers up after the tasks have
    finished, until Ctrl-C (or SIGTERM). Returns the exit code: 0 when every task completed."""
    registry = load_registry()
    if DEMO_TYPE not in registry:
        raise ConfigurationError(
            f"the demo needs {DEMO_TYPE}: pip install -e plugins/taskq_fibonacci (known task "
            f"types: {registry.known_names()})"
        )
    console = output.console()
    with servers_for(settings, "demo") as (database_url, redis_url):
        engines.upgrade(database_url, prepare=settings.database_prepare)
        if demo_exports.available() and export_rows > 0:
            demo_exports.configure(database_url)  # before the children start: they inherit it
            registry = load_registry()
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
            until = "until Ctrl-C" if serve else "until the demo ends"
            console.print(f"dashboard: {api_url}/ui  (API {api_url}, {until})")
            drive = _drive(
                console, settings, registry, database_url, redis_url, tasks, workers, export_rows
            )
            code = asyncio.run(drive)
            if serve and code != INTERRUPTED:
                console.print(
                    f"still serving: dashboard {api_url}/ui, API {api_url} "
                    f"(`TASKQ_API_URL={api_url} taskq tasks show`); Ctrl-C stops"
                )
                _serve(procs[0])
            return code
        finally:
            terminate(procs)


class _Stop(Exception):
    pass


def _serve(api: subprocess.Popen[bytes]) -> None:
    """Return on SIGINT or SIGTERM; raise if the API exits first."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while api.poll() is None:
            time.sleep(0.2)
        raise TaskqError(f"the demo's API exited (code {api.returncode})")
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
        return INTERRUPTED if interrupted.is_set() else (0 if done == total else 1)
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
