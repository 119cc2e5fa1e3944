"""The dashboard's queries: cheap counts, recent throughput and the tasks page's columns,
whatever the table's size (each statement reads an index range or a bounded window, never the
whole table)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.db.models import tasks
from taskq_core.records import worker_of

# Pending and running are counted exactly up to this, through their partial indexes; past it the
# page says "100,000+" rather than walk a huge backlog every refresh.
COUNT_CAP = 100_000
THROUGHPUT_CAP = 50_000  # finished tasks per status read for the chart
THROUGHPUT_MINUTES = 15
RUNNING_CAP = 500  # running tasks listed on the overview, across all workers
BUCKET_SECONDS = 30

_LIVE_COUNTS = text(
    f"""
    SELECT
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'pending' AND queue = :queue
                             LIMIT {COUNT_CAP + 1}) p) AS pending,
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'running'
                             LIMIT {COUNT_CAP + 1}) r) AS running
    """
)

# Below COUNT_CAP rows in all, finished tasks are counted exactly (through ix_tasks_finished):
# the planner's statistics are missing or stale on a young table (a fresh install read 0).
_FINISHED_COUNTS = text(
    f"""
    SELECT
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'completed'
                             LIMIT {COUNT_CAP + 1}) c) AS completed,
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'failed'
                             LIMIT {COUNT_CAP + 1}) f) AS failed,
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'cancelled'
                             LIMIT {COUNT_CAP + 1}) x) AS cancelled
    """
)

# The planner's own statistics (refreshed by autovacuum's ANALYZE): the table's row estimate
# times each status's frequency. Free to read; approximate by design.
_ESTIMATES = text(
    """
    SELECT greatest(c.reltuples, 0)::bigint AS total,
           s.most_common_vals::text::text[] AS vals,
           s.most_common_freqs AS freqs
    FROM pg_class c
    LEFT JOIN pg_stats s
      ON s.schemaname = current_schema() AND s.tablename = 'tasks' AND s.attname = 'status'
    WHERE c.oid = to_regclass('tasks')
    """
)

_OLDEST_PENDING = text(
    """
    SELECT o.id, o.created_at, extract(epoch FROM now() - o.created_at) AS age_seconds
    FROM unnest(ARRAY[1, 2, 3, 4, 5]) AS p(priority)
    CROSS JOIN LATERAL (
        SELECT id, created_at FROM tasks
        WHERE status = 'pending' AND queue = :queue AND priority = p.priority
        ORDER BY id LIMIT 1
    ) o
    ORDER BY o.id LIMIT 1
    """
)

# Each status read through `ix_tasks_finished` (status, finished_at), newest first, at most
# THROUGHPUT_CAP rows: exact below that, and "at least" above it (over 55 finishes/s of one
# status, sustained for the 15 minutes). date_part gives a float; extract, a slower numeric.
_RECENT = f"""
    (SELECT status, finished_at FROM tasks
     WHERE status = '{{status}}'
       AND finished_at > now() - make_interval(mins => {THROUGHPUT_MINUTES})
     ORDER BY finished_at DESC LIMIT {THROUGHPUT_CAP})
"""
_THROUGHPUT = text(
    f"""
    SELECT floor(date_part('epoch', now() - finished_at) / {BUCKET_SECONDS})::int AS bucket,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM ({_RECENT.format(status="completed")} UNION ALL {_RECENT.format(status="failed")}) recent
    GROUP BY bucket
    """
)


# The dashboard's tasks page lists these through TaskQueries.list_tasks (the API's query): the
# page shows each running task's progress, which the API's listing leaves out, and neither run_at
# nor worker_id.
PAGE_COLUMNS = (
    tasks.c.id,
    tasks.c.task_type,
    tasks.c.status,
    tasks.c.priority,
    tasks.c.attempts,
    tasks.c.max_attempts,
    tasks.c.created_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.progress,  # a small JSON object, NULL for tasks that never report
)


class OverviewQueries:
    """What the dashboard reads; every statement is bounded."""

    def __init__(self, engine: AsyncEngine, queue: str = "default") -> None:
        self.engine = engine
        self.queue = queue

    async def status_counts(self) -> dict[str, Any]:
        """Exact pending and running counts (capped), and estimates for the finished statuses."""
        async with self.engine.connect() as conn:
            live = (await conn.execute(_LIVE_COUNTS, {"queue": self.queue})).one()
            estimates = (await conn.execute(_ESTIMATES)).first()
            exact = estimates is None or not estimates.vals or estimates.total < COUNT_CAP
            counted = (await conn.execute(_FINISHED_COUNTS)).one() if exact else None
        finished: dict[str, int] = {"completed": 0, "failed": 0, "cancelled": 0}
        if counted is not None:
            finished = {name: getattr(counted, name) for name in finished}
        elif estimates is not None:
            for value, freq in zip(estimates.vals, estimates.freqs, strict=True):
                if value in finished:
                    finished[value] = round(estimates.total * freq)
        return {
            "pending": live.pending,
            "running": live.running,
            "capped": COUNT_CAP,
            "finished_estimates": finished,
            "finished_exact": counted is not None,
            "total_estimate": estimates.total if estimates is not None else 0,
        }

    async def oldest_pending(self) -> dict[str, Any] | None:
        """The oldest pending task (id, created_at, age_seconds), through the pending index."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_OLDEST_PENDING, {"queue": self.queue})).first()
        return dict(row._mapping) if row is not None else None

    async def throughput(self) -> dict[str, Any]:
        """Completed and failed tasks per 30 s over the last 15 minutes, oldest bucket first."""
        buckets = THROUGHPUT_MINUTES * 60 // BUCKET_SECONDS
        completed = [0] * buckets
        failed = [0] * buckets
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_THROUGHPUT)).all()
        for row in rows:
            if 0 <= row.bucket < buckets:
                index = buckets - 1 - row.bucket
                completed[index] = row.completed
                failed[index] = row.failed
        return {
            "bucket_seconds": BUCKET_SECONDS,
            "completed": completed,
            "failed": failed,
            # A status hit the cap: its earlier finishes were not looked at.
            "at_least": max(sum(completed), sum(failed)) >= THROUGHPUT_CAP,
        }

    async def running_by_worker(self, limit: int = RUNNING_CAP) -> dict[str, list[dict[str, Any]]]:
        """Running tasks (id, task_type) by the worker holding them (its runners' included),
        from the tasks themselves (the workers' own lists are only as fresh as their last
        heartbeat); at most `limit`."""
        query = (
            select(tasks.c.id, tasks.c.task_type, tasks.c.worker_id)
            .where(tasks.c.status == "running")
            .order_by(tasks.c.id)
            .limit(limit)
        )
        result: dict[str, list[dict[str, Any]]] = {}
        async with self.engine.connect() as conn:
            for row in await conn.execute(query):
                result.setdefault(worker_of(row.worker_id), []).append(
                    {"id": row.id, "task_type": row.task_type}
                )
        return result
