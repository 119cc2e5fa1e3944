"""What the sweeper's lost-dispatch check costs per sweep with a deep backlog, and that it finds
a lost id behind it: 1,000,000 pending tasks queued in Redis (plus delayed ones not yet due).

    python -m bench.sweep [--pending 1000000] [--delayed 100000] [--sweeps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench import report
from bench.servers import given_or_embedded
from taskq_core import broker
from taskq_core.db import engines, urls
from taskq_core.worker.lost import LostDispatches
from taskq_core.worker.sql import Sweeps
from taskq_core.worker.sql.lost import LostQueries

CHUNK = 10_000


def fill(url: str, pending: int, delayed: int) -> None:
    """`delayed` tasks waiting for their time (lowest ids), then `pending` dispatched ones spread
    over the five priorities, dispatched a minute ago so the grace period is long past."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (task_type, priority, input_data, max_attempts, run_at) "
            "SELECT 'NoopTask', 1 + i %% 5, '{}', 3, now() + interval '1 hour' "
            "FROM generate_series(1, %s) i",
            [delayed],
        )
        conn.execute(
            "INSERT INTO tasks (task_type, priority, input_data, max_attempts, enqueued_at) "
            "SELECT 'NoopTask', 1 + i %% 5, '{}', 3, now() - interval '1 minute' "
            "FROM generate_series(1, %s) i",
            [pending],
        )
        conn.execute("VACUUM ANALYZE tasks")


async def push_all(url: str, queue: broker.Broker) -> None:
    """Every dispatched pending id into its list, oldest at the popping end."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, priority FROM tasks WHERE enqueued_at IS NOT NULL ORDER BY id"
        ).fetchall()
    for start in range(0, len(rows), CHUNK):
        await queue.push_many((id_, priority) for id_, priority in rows[start : start + CHUNK])


async def timed(check: LostDispatches, sweeps: int) -> tuple[list[float], int]:
    times, found = [], 0
    for _ in range(sweeps):
        started = time.perf_counter()
        found += await check.redispatch()
        times.append((time.perf_counter() - started) * 1000)
    return times, found


def summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


async def run(url: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    engines.upgrade(url)
    fill(url, args.pending, args.delayed)
    redis = broker.connect(redis_url)
    queue = broker.Broker(redis)
    sweeps = Sweeps(urls.conninfo(url), "default")
    check = LostDispatches(LostQueries(sweeps.connection, "default"), queue, grace=2, limit=10_000)
    try:
        await redis.delete(*queue.keys)
        await push_all(url, queue)
        healthy, found_healthy = await timed(check, args.sweeps)
        # One id lost at the popping end of priority 3 (next to pop), one deep in priority 5's.
        heads = await queue.heads(1)
        first3 = heads[3][0]
        await redis.lrem(broker.queue_key("default", 3), 0, first3)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT id FROM tasks WHERE priority = 5 AND enqueued_at IS NOT NULL "
                "ORDER BY id OFFSET %s LIMIT 1",
                [args.pending // 10],
            ).fetchone()
        assert row is not None
        deep5 = row[0]
        await redis.lrem(broker.queue_key("default", 5), 0, deep5)
        # The first sweep after the loss only suspects it (a pop whose claim is in flight looks
        # the same); the next one finds it again and pushes it.
        suspect_ms, suspected = await timed(check, 1)
        one_ms, found_one = await timed(check, 1)
        requeued = (await queue.heads(1))[3][0] == first3
        with psycopg.connect(url) as conn:
            counted = time.perf_counter()
            conn.execute(
                "SELECT priority, count(*) FROM tasks WHERE status = 'pending' "
                "AND queue = 'default' AND enqueued_at < now() - interval '2 s' GROUP BY priority"
            ).fetchall()
            count_ms = (time.perf_counter() - counted) * 1000
    finally:
        await redis.aclose()
        await sweeps.close()
    return {
        "date": datetime.now(UTC).isoformat(),
        "pending": args.pending,
        "delayed": args.delayed,
        "healthy_sweep": summary(healthy),
        "healthy_false_repushes": found_healthy,
        "sweep_suspecting_lost_id": {"ms": suspect_ms[0], "repushed": suspected},
        "sweep_with_lost_id": {
            "ms": one_ms[0],
            "repushed": found_one,
            "at_popping_end": requeued,
        },
        "deep_lost_id_left_for_its_turn": deep5,
        "old_count_query_ms": count_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--delayed", type=int, default=100_000)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    with given_or_embedded(args.database_url, args.redis_url, "taskq-sweep-") as (url, redis_url):
        result = asyncio.run(run(url, redis_url, args))
    h = result["healthy_sweep"]
    print(f"{result['pending']:,} pending queued + {result['delayed']:,} delayed")
    print(
        f"healthy sweep: median {h['median_ms']:.1f} ms (min {h['min_ms']:.1f}, "
        f"max {h['max_ms']:.1f}), ids re-pushed: {result['healthy_false_repushes']}"
    )
    suspect = result["sweep_suspecting_lost_id"]
    print(
        f"first sweep after the loss: {suspect['ms']:.1f} ms, re-pushed {suspect['repushed']} "
        "(it only suspects)"
    )
    lost = result["sweep_with_lost_id"]
    print(
        f"sweep with a lost id at the popping end: {lost['ms']:.1f} ms, re-pushed "
        f"{lost['repushed']}, back at the popping end: {lost['at_popping_end']}"
    )
    print(f"the old per-sweep count query alone: {result['old_count_query_ms']:.1f} ms")
    print(f"written to {report.save('sweep', result)}")


if __name__ == "__main__":
    main()
