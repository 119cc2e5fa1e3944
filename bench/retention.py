"""Retention under a steady load: the tasks table stays bounded and draining does not slow.

python -m bench.retention [--minutes 10] [--rate 500] [--retention 2m] [--modes off,on]

For each mode (retention off, then on at `--retention`), on fresh embedded servers (fsync on):
two workers drain FibonacciTask(n=10) while tasks are enqueued at a fixed `--rate` per second
(one INSERT and one LPUSH per tenth of a second, as the API's group commit does) for
`--minutes`. Every 10 s it samples the row count and on-disk size of `tasks` and
`task_attempts`, the completions in the window and their enqueue-to-finish lag. Then a burst of
`--burst` tasks is enqueued at once, and the time to drain it gives the drain rate with the table
at its steady size. Runs from the project's own .venv (make .venv/.test).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import report
from bench.measure import percentile

_INSERT = """
    INSERT INTO tasks (task_type, input_data, priority, max_attempts, enqueued_at)
    SELECT 'FibonacciTask', '{"n": 10}', 3, 3, now() FROM generate_series(1, %s)
    RETURNING id
"""
_SAMPLE = """
    SELECT (SELECT count(*) FROM tasks),
           pg_total_relation_size('tasks') + pg_total_relation_size('task_attempts'),
           (SELECT count(*) FROM task_attempts),
           (SELECT count(*) FROM tasks WHERE status = 'pending')
"""
_WINDOW = """
    SELECT extract(epoch FROM finished_at - created_at) FROM tasks
    WHERE status = 'completed' AND finished_at > now() - make_interval(secs => %s)
"""
# Finished = enqueued - unfinished: retention deletes finished rows, so they cannot be counted.
_UNFINISHED = "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')"
SAMPLE_EVERY = 10.0  # seconds
KEY = "taskq:{default}:3"


def push(conn: psycopg.Connection[Any], client: redis.Redis, count: int) -> int:
    ids = [row[0] for row in conn.execute(_INSERT, (count,)).fetchall()]
    client.lpush(KEY, *ids)
    return len(ids)


def finished(conn: psycopg.Connection[Any], enqueued: int) -> int:
    return enqueued - conn.execute(_UNFINISHED).fetchone()[0]  # type: ignore[index]


def run_mode(
    database_url: str, redis_url: str, retention: str, minutes: float, rate: int, burst: int
) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        TASKQ_DATABASE_URL=database_url,
        TASKQ_REDIS_URL=redis_url,
        TASKQ_RETENTION_COMPLETED=retention,
        TASKQ_LOG_LEVEL="WARNING",
    )
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE tasks, task_attempts, workers, sweeper_leases, schedule_ticks "
            "RESTART IDENTITY"
        )
        conn.execute("VACUUM FULL tasks")
        conn.execute("VACUUM FULL task_attempts")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "taskq_core.cli", "worker", "--concurrency", "32"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    samples: list[dict[str, Any]] = []
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            time.sleep(3)  # the workers start
            start = time.monotonic()
            next_push = next_sample = start
            per_tick = max(1, rate // 10)
            last_completed = enqueued = 0
            while time.monotonic() - start < minutes * 60:
                now = time.monotonic()
                if now >= next_push:
                    enqueued += push(conn, client, per_tick)
                    next_push += 0.1
                if now >= next_sample:
                    rows, size, attempts, pending = conn.execute(_SAMPLE).fetchone()  # type: ignore[misc]
                    completed = finished(conn, enqueued)
                    lags = [float(r[0]) for r in conn.execute(_WINDOW, (SAMPLE_EVERY,)).fetchall()]
                    samples.append(
                        {
                            "t": round(now - start, 1),
                            "rows": rows,
                            "attempt_rows": attempts,
                            "bytes": size,
                            "pending": pending,
                            "completed_per_s": (completed - last_completed) / SAMPLE_EVERY,
                            "lag_p50_ms": 1000 * float(percentile(lags, 50)) if lags else None,
                            "lag_p95_ms": 1000 * float(percentile(lags, 95)) if lags else None,
                        }
                    )
                    last_completed = completed
                    print(samples[-1], flush=True)
                    next_sample += SAMPLE_EVERY
                time.sleep(max(0.0, min(next_push, next_sample) - time.monotonic()))
            # Drain what is left, then time a burst against the table as it now is.
            while finished(conn, enqueued) < enqueued:
                time.sleep(0.2)
            rows_at_burst = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]  # type: ignore[index]
            burst_start = time.monotonic()
            for _ in range(burst // 1000):
                enqueued += push(conn, client, 1000)
            while finished(conn, enqueued) < enqueued:
                time.sleep(0.05)
            burst_seconds = time.monotonic() - burst_start
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        client.close()
    steady = samples[3:] or samples  # the first 30 s warm up
    return {
        "retention": retention,
        "samples": samples,
        "max_rows": max(s["rows"] for s in samples),
        "max_bytes": max(s["bytes"] for s in samples),
        "end_rows": samples[-1]["rows"],
        "end_bytes": samples[-1]["bytes"],
        "completed_per_s_mean": sum(s["completed_per_s"] for s in steady) / len(steady),
        "lag_p50_ms_median": percentile([s["lag_p50_ms"] for s in steady if s["lag_p50_ms"]], 50),
        "lag_p95_ms_median": percentile([s["lag_p95_ms"] for s in steady if s["lag_p95_ms"]], 50),
        "rows_at_burst": rows_at_burst,
        "burst_tasks_per_s": burst / burst_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=500, help="tasks enqueued per second")
    parser.add_argument("--retention", default="2m", help="TASKQ_RETENTION_COMPLETED when on")
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--modes", default="off,on")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="taskq-retention-") as tmp:
        from taskq_core.db import engines
        from taskq_core.embedded import EmbeddedServers

        with EmbeddedServers(Path(tmp) / "servers", durable=True) as servers:
            engines.upgrade(servers.database_url)
            for mode in args.modes.split(","):
                retention = "off" if mode == "off" else args.retention
                print(f"--- retention {retention}", flush=True)
                results[mode] = run_mode(
                    servers.database_url,
                    servers.redis_url,
                    retention,
                    args.minutes,
                    args.rate,
                    args.burst,
                )
    print(
        "| retention | max rows | max MB | end rows | end MB | completed/s | lag p50 / p95 ms "
        "| burst drain tasks/s (rows then) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results.values():
        print(
            f"| {r['retention']} | {r['max_rows']:,} | {r['max_bytes'] / 2**20:.0f} "
            f"| {r['end_rows']:,} | {r['end_bytes'] / 2**20:.0f} | {r['completed_per_s_mean']:.0f} "
            f"| {r['lag_p50_ms_median']:.0f} / {r['lag_p95_ms_median']:.0f} "
            f"| {r['burst_tasks_per_s']:.0f} ({r['rows_at_burst']:,}) |"
        )
    document = {
        "date": datetime.now(UTC).isoformat(),
        "minutes": args.minutes,
        "rate": args.rate,
        "burst": args.burst,
        "results": results,
    }
    print(f"written to {report.save('retention', document)}")


if __name__ == "__main__":
    main()
