"""Does taskq's per-task cost stay flat as the table grows? Rates on an empty table and with
1,000,000 finished and 100,000 pending tasks, plus the query plans of the hot statements.

    python -m bench.scale [--finished 1000000] [--pending 100000] [--ops 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench import report
from bench.servers import given_or_embedded
from taskq_core import broker, enqueue
from taskq_core.db import engines, urls
from taskq_core.db.storage import Storage
from taskq_core.records import NewTask
from taskq_core.worker.sql import Claims

NEW = NewTask(task_type="NoopTask", input_data={}, priority=3, max_attempts=3)

PLANS = {
    "claim": "UPDATE tasks SET status = 'running' WHERE id = ANY(ARRAY[{id}]::bigint[]) "
    "AND status = 'pending' AND run_at <= now()",
    "get": "SELECT * FROM tasks WHERE id = {id}",
    "due": "SELECT id FROM tasks WHERE status = 'pending' AND enqueued_at IS NULL "
    "AND run_at <= now() ORDER BY run_at LIMIT 1000",
    "expired": "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < now() "
    "ORDER BY lease_expires_at LIMIT 1000",
    "list": "SELECT * FROM tasks WHERE status = 'failed' ORDER BY id DESC LIMIT 50",
}


async def rate(ops: int, call: Callable[[int], Awaitable[object]]) -> float:
    """Calls per second of `call(i)`, one at a time, as a single client would see them."""
    started = time.perf_counter()
    for i in range(ops):
        await call(i)
    return ops / (time.perf_counter() - started)


async def measure(
    storage: Storage, claims: Claims, queue: broker.Broker, ops: int
) -> dict[str, float]:
    """Enqueue, claim and read rates, one operation per call."""
    created: list[int] = []

    async def enqueue_one(_: int) -> None:
        (row,) = await enqueue.submit(storage, queue, [NEW])
        created.append(row["id"])

    enqueue_rate = await rate(ops, enqueue_one)
    claim_rate = await rate(ops, lambda i: claims.claim([created[i]], "scale", 60))
    get_rate = await rate(ops, lambda i: storage.get(created[i]))
    await queue.redis.delete(*queue.keys)
    return {"enqueue": enqueue_rate, "claim": claim_rate, "get": get_rate}


def fill(url: str, finished: int, pending: int) -> None:
    """Add `finished` completed and `pending` pending tasks, as a long-running system would have."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (task_type, status, priority, input_data, result, attempts, "
            "max_attempts, started_at, finished_at, enqueued_at) "
            "SELECT 'NoopTask', 'completed', 1 + i %% 5, '{}', '{}', 1, 3, now(), now(), now() "
            "FROM generate_series(1, %s) i",
            [finished],
        )
        conn.execute(
            "INSERT INTO tasks (task_type, priority, input_data, max_attempts, enqueued_at) "
            "SELECT 'NoopTask', 1 + i %% 5, '{}', 3, now() FROM generate_series(1, %s) i",
            [pending],
        )
        conn.execute("VACUUM ANALYZE tasks")


def plans(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        (some_id,) = conn.execute("SELECT max(id) FROM tasks").fetchone() or (1,)
        out = {}
        for name, query in PLANS.items():
            rows = conn.execute("EXPLAIN " + query.format(id=some_id)).fetchall()
            out[name] = "\n".join(r[0] for r in rows)
        return out


async def run(url: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    engines.upgrade(url)
    engine = engines.async_engine(url, pool_size=2)
    redis = broker.connect(redis_url)
    storage, claims, queue = Storage(engine), Claims(urls.conninfo(url)), broker.Broker(redis)
    try:
        # warm-up: connections, plans, caches
        await measure(storage, claims, queue, min(args.ops, 200))
        empty = [await measure(storage, claims, queue, args.ops) for _ in range(args.runs)]
        fill(url, args.finished, args.pending)
        full = [await measure(storage, claims, queue, args.ops) for _ in range(args.runs)]
    finally:
        await redis.aclose()
        await claims.close()
        await engine.dispose()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(),
        "finished": args.finished,
        "pending": args.pending,
        "ops_per_measure": args.ops,
        "plans": plans(url),
    }
    for op in ("enqueue", "claim", "get"):
        a = [m[op] for m in empty]
        b = [m[op] for m in full]
        result[op] = {
            "empty": {"median": statistics.median(a), "min": min(a), "max": max(a)},
            "full": {"median": statistics.median(b), "min": min(b), "max": max(b)},
            "ratio": statistics.median(b) / statistics.median(a),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    with given_or_embedded(args.database_url, args.redis_url, "taskq-scale-") as (url, redis_url):
        result = asyncio.run(run(url, redis_url, args))
    print(f"{'operation':<10}{'empty /s':>12}{'full /s':>12}{'full/empty':>12}")
    for op in ("enqueue", "claim", "get"):
        r = result[op]
        print(
            f"{op:<10}{r['empty']['median']:>12.0f}{r['full']['median']:>12.0f}{r['ratio']:>12.2f}"
        )
    for name, plan in result["plans"].items():
        print(f"-- {name}\n{plan}")
    path = report.save("scale", result)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
