"""Queries of the sweeper and the worker registry: leadership, expiries, due tasks, workers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import BigInteger

from taskq_core.storage.records import Dispatch

_LEAD = text(
    """
    INSERT INTO sweeper_leases (queue, holder, expires_at)
    VALUES (:queue, :holder, now() + make_interval(secs => :ttl))
    ON CONFLICT (queue) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
        WHERE sweeper_leases.holder = EXCLUDED.holder OR sweeper_leases.expires_at < now()
    RETURNING holder
    """
)

# A running task whose lease ran out lost its worker (killed, frozen, cut off): it goes back to
# pending at once, or fails when that was its last attempt, or ends cancelled if that was asked.
# Its attempt is recorded as lost, in the same statement.
_RECOVER = text(
    """
    WITH expired AS (
        SELECT id, worker_id AS old_worker, started_at AS old_started
        FROM tasks
        WHERE status = 'running' AND lease_expires_at < now() AND queue = :queue
        ORDER BY lease_expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE tasks t SET
            status = CASE
                WHEN t.cancel_requested_at IS NOT NULL THEN 'cancelled'
                WHEN t.attempts >= t.max_attempts THEN 'failed'
                ELSE 'pending' END,
            error = jsonb_build_object(
                'type', 'LeaseExpiredError',
                'message', 'worker ' || coalesce(expired.old_worker, '?')
                    || ' stopped renewing its lease (killed or cut off) during attempt '
                    || t.attempts,
                'traceback', ''),
            finished_at = CASE
                WHEN t.cancel_requested_at IS NOT NULL OR t.attempts >= t.max_attempts
                THEN now() END,
            run_at = now(),
            enqueued_at = CASE
                WHEN t.cancel_requested_at IS NULL AND t.attempts < t.max_attempts
                THEN now() END,
            lease_expires_at = NULL,
            worker_id = NULL
        FROM expired
        WHERE t.id = expired.id
        RETURNING t.id, t.priority, t.status, t.attempts, t.error,
                  expired.old_worker, expired.old_started
    ), recorded AS (
        INSERT INTO task_attempts (task_id, attempt, worker_id, started_at, outcome, error)
        SELECT id, attempts, old_worker, old_started, 'lost', error FROM moved
    )
    SELECT id, priority, status FROM moved
    """
)

_DUE = text(
    """
    UPDATE tasks SET enqueued_at = now()
    WHERE id IN (
        SELECT id FROM tasks
        WHERE status = 'pending' AND enqueued_at IS NULL AND run_at <= now() AND queue = :queue
        ORDER BY run_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, priority
    """
)

_DISPATCHED_COUNTS = text(
    """
    SELECT priority, count(*) AS n FROM tasks
    WHERE status = 'pending' AND queue = :queue AND enqueued_at < :before
    GROUP BY priority
    """
)

_DISPATCHED_IDS = text(
    """
    SELECT id FROM tasks
    WHERE status = 'pending' AND queue = :queue AND priority = :priority AND enqueued_at < :before
    ORDER BY id
    LIMIT :limit
    """
)

_BEAT = text(
    """
    INSERT INTO workers (id, queue, hostname, pid, concurrency, running)
    VALUES (:id, :queue, :hostname, :pid, :concurrency, :running)
    ON CONFLICT (id) DO UPDATE SET last_beat_at = now(), running = EXCLUDED.running
    RETURNING now() AS now
    """
).bindparams(bindparam("running", type_=ARRAY(BigInteger)))


class SweepQueries:
    engine: AsyncEngine
    queue: str

    async def lead(self, holder: str, ttl_seconds: float) -> bool:
        """Take or keep the sweeper lease for this queue; True while `holder` has it."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    _LEAD, {"queue": self.queue, "holder": holder, "ttl": ttl_seconds}
                )
            ).first()
        return row is not None

    async def recover_expired(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Repair tasks whose lease ran out; each row: id, priority, new status."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(_RECOVER, {"queue": self.queue, "limit": limit})
            return [dict(row._mapping) for row in rows]

    async def dispatch_due(self, limit: int = 1000) -> list[Dispatch]:
        """Mark due delayed or retrying tasks as enqueued; the caller pushes them."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(_DUE, {"queue": self.queue, "limit": limit})
            return [Dispatch(row.id, row.priority) for row in rows]

    async def dispatched_counts(self, before: datetime) -> dict[int, int]:
        """Per priority, how many pending tasks were pushed before `before`."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(_DISPATCHED_COUNTS, {"queue": self.queue, "before": before})
            return {row.priority: row.n for row in rows}

    async def dispatched_ids(self, priority: int, before: datetime, limit: int) -> list[int]:
        """Ids of pending tasks at `priority` pushed before `before`, oldest first."""
        params = {"queue": self.queue, "priority": priority, "before": before, "limit": limit}
        async with self.engine.connect() as conn:
            return [row.id for row in await conn.execute(_DISPATCHED_IDS, params)]

    async def beat(
        self, worker_id: str, hostname: str, pid: int, concurrency: int, running: Sequence[int]
    ) -> datetime:
        """Register or refresh this worker; returns the database's clock."""
        params = {
            "id": worker_id,
            "queue": self.queue,
            "hostname": hostname,
            "pid": pid,
            "concurrency": concurrency,
            "running": list(running),
        }
        async with self.engine.begin() as conn:
            now: datetime = (await conn.execute(_BEAT, params)).scalar_one()
            return now

    async def worker_stopped(self, worker_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text("UPDATE workers SET stopped_at = now(), running = '{}' WHERE id = :id"),
                {"id": worker_id},
            )

    async def list_workers(self, stale_after: float) -> list[dict[str, Any]]:
        """Workers that beat within `stale_after` seconds, newest first."""
        query = text(
            """
            SELECT id, queue, hostname, pid, concurrency, started_at, last_beat_at, running
            FROM workers
            WHERE stopped_at IS NULL AND last_beat_at > now() - make_interval(secs => :stale)
            ORDER BY started_at DESC
            """
        )
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query, {"stale": stale_after})]

    async def prune_workers(self, older_than: float) -> None:
        """Forget workers that stopped or went silent more than `older_than` seconds ago."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "DELETE FROM workers WHERE last_beat_at < now() - make_interval(secs => :age)"
                ),
                {"age": older_than},
            )
