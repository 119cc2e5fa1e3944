"""What one refresh of the dashboard's overview costs with 1,000,000 finished tasks in the table:
each of its statements in-process, and the whole fragment over HTTP from a real API process,
beside the full-table count it avoids.

    python -m bench.dashboard [--finished 1000000] [--pending 1000] [--refreshes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from bench import report
from bench.servers import given_or_embedded
from taskq_core import broker
from taskq_core.db import engines
from taskq_core.db.overview import PAGE_COLUMNS, OverviewQueries
from taskq_core.db.storage import Storage
from taskq_core.embedded.ports import free_port
from taskq_core.processes import spawn

FULL_COUNT = "SELECT status, count(*) FROM tasks GROUP BY status"


def fill(url: str, finished: int, pending: int) -> None:
    """`finished` tasks over the last two days (90% completed, 8% failed, 2% cancelled), the
    newest 10,000 of them in the last 15 minutes, and `pending` waiting ones."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (task_type, status, priority, input_data, result, attempts, "
            "max_attempts, created_at, started_at, finished_at, enqueued_at) "
            "SELECT 'FibonacciTask', CASE WHEN i %% 50 < 45 THEN 'completed' "
            "  WHEN i %% 50 < 49 THEN 'failed' ELSE 'cancelled' END, 1 + i %% 5, '{\"n\": 10}', "
            "  '{\"result\": 55}', 1, 3, t, t, t, t "
            "FROM generate_series(1, %(n)s) i, "
            "LATERAL (SELECT CASE WHEN i > %(n)s - 10000 "
            "  THEN now() - make_interval(secs => (%(n)s - i) * 0.09) "
            "  ELSE now() - interval '2 days' + make_interval(secs => i * 0.15) END AS t) s",
            {"n": finished},
        )
        conn.execute(
            "INSERT INTO tasks (task_type, priority, input_data, max_attempts, enqueued_at) "
            "SELECT 'FibonacciTask', 1 + i %% 5, '{}', 3, now() FROM generate_series(1, %s) i",
            [pending],
        )
        conn.execute("VACUUM ANALYZE tasks")


async def timed(count: int, call: Callable[[], Awaitable[object]]) -> dict[str, float]:
    """Milliseconds per call: median and 95th percentile over `count` sequential calls."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": statistics.median(samples), "p95_ms": samples[int(len(samples) * 0.95)]}


async def statements(url: str, redis_url: str, count: int) -> dict[str, dict[str, float]]:
    engine = engines.async_engine(url, pool_size=2)
    redis = broker.connect(redis_url)
    queries = OverviewQueries(engine)
    storage = Storage(engine)
    queue = broker.Broker(redis)

    async def full_count() -> None:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(FULL_COUNT)

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "status counts": queries.status_counts,
        "oldest pending": queries.oldest_pending,
        "throughput": queries.throughput,
        "workers": lambda: storage.list_workers(30),
        "running tasks by worker": queries.running_by_worker,
        "queue depths (Redis)": queue.depths,
        "tasks page (50)": lambda: storage.list_tasks(limit=50, columns=PAGE_COLUMNS),
        "tasks page, failed": lambda: storage.list_tasks(
            status="failed", limit=50, columns=PAGE_COLUMNS
        ),
        "avoided: full count": full_count,
    }
    try:
        for call in calls.values():  # warm-up: connections, plans, caches
            await call()
        return {name: await timed(count, call) for name, call in calls.items()}
    finally:
        await redis.aclose()
        await engine.dispose()


def refreshes(url: str, redis_url: str, count: int) -> dict[str, float]:
    """The overview fragment the page fetches every 2 s, from a real API process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env.update(TASKQ_DATABASE_URL=url, TASKQ_REDIS_URL=redis_url, TASKQ_LOG_LEVEL="WARNING")
    api = spawn(
        [sys.executable, "-m", "taskq_core.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        new_session=False,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(300):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            client.get("/ui")  # the session cookie
            for _ in range(5):
                client.get("/ui/live/overview").raise_for_status()
            samples = []
            for _ in range(count):
                started = time.perf_counter()
                client.get("/ui/live/overview").raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        api.terminate()
        api.wait(15)
    samples.sort()
    return {"median_ms": statistics.median(samples), "p95_ms": samples[int(len(samples) * 0.95)]}


def run(url: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    engines.upgrade(url)
    fill(url, args.finished, args.pending)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(),
        "finished": args.finished,
        "pending": args.pending,
        "statements": asyncio.run(statements(url, redis_url, args.refreshes)),
        "refresh_http": refreshes(url, redis_url, args.refreshes),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--refreshes", type=int, default=100)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    given = args.database_url, args.redis_url
    with given_or_embedded(*given, "taskq-dashboard-") as (url, redis_url):
        result = run(url, redis_url, args)
    title = f"with {args.finished:,} finished"
    print(f"{title:<28}{'median ms':>10}{'p95 ms':>10}")
    for name, r in [*result["statements"].items(), ("refresh over HTTP", result["refresh_http"])]:
        print(f"{name:<28}{r['median_ms']:>10.2f}{r['p95_ms']:>10.2f}")
    print(f"written to {report.save('dashboard', result)}")


if __name__ == "__main__":
    main()
