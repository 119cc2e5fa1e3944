"""The sweeper's and the heartbeat's statements: leadership, expiries, due tasks, workers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString

from taskq_core.records import Dispatch
from taskq_core.worker.sql.connection import Connection

_LEAD: LiteralString = """
    INSERT INTO sweeper_leases (queue, holder, expires_at)
    VALUES (%(queue)s, %(holder)s, now() + make_interval(secs => %(ttl)s))
    ON CONFLICT (queue) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
        WHERE sweeper_leases.holder = EXCLUDED.holder OR sweeper_leases.expires_at < now()
    RETURNING holder
"""

# A running task whose lease ran out lost its worker (killed, frozen, cut off): it goes back to
# pending at once, or fails when that was its last attempt, or ends cancelled if that was asked.
# Its attempt is recorded as lost, in the same statement.
_RECOVER: LiteralString = """
    WITH expired AS (
        SELECT id, worker_id AS old_worker, started_at AS old_started
        FROM tasks
        WHERE status = 'running' AND lease_expires_at < now() AND queue = %(queue)s
        ORDER BY lease_expires_at
        LIMIT %(limit)s
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
        RETURNING t.id, t.priority, t.status, t.attempts, t.error, t.task_type,
                  expired.old_worker, expired.old_started
    ), recorded AS (
        INSERT INTO task_attempts (task_id, attempt, worker_id, started_at, outcome, error)
        SELECT id, attempts, old_worker, old_started, 'lost', error FROM moved
    )
    SELECT id, priority, status, task_type FROM moved
"""

_DUE: LiteralString = """
    UPDATE tasks SET enqueued_at = now()
    WHERE id IN (
        SELECT id FROM tasks
        WHERE status = 'pending' AND enqueued_at IS NULL AND run_at <= now() AND queue = %(queue)s
            AND task_type NOT IN (
                SELECT task_type FROM paused_task_types WHERE queue = %(queue)s)
        ORDER BY run_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, priority
"""

_BEAT: LiteralString = """
    INSERT INTO workers (id, queue, hostname, pid, concurrency, running)
    VALUES (%(id)s, %(queue)s, %(hostname)s, %(pid)s, %(concurrency)s, %(running)s::bigint[])
    ON CONFLICT (id) DO UPDATE SET last_beat_at = now(), running = EXCLUDED.running
    RETURNING now()
"""


_WORKER_STOPPED: LiteralString = """
    UPDATE workers SET stopped_at = now(), running = '{}' WHERE id = %(id)s
"""

_PRUNE_WORKERS: LiteralString = """
    DELETE FROM workers WHERE last_beat_at < now() - make_interval(secs => %(age)s)
"""

_CLOCK: LiteralString = "SELECT now() - make_interval(secs => %(minus)s)"


class Sweeps:
    """The statements of one worker's sweeper and heartbeat, on one connection: they are rare,
    and psycopg runs concurrent statements on a connection one after the other."""

    def __init__(self, conninfo: str, queue: str, *, prepare: bool = True) -> None:
        self._conn = Connection(conninfo, prepare=prepare)
        self.queue = queue

    @property
    def connection(self) -> Connection:
        """The sweeper's one connection, for statements kept in modules of their own (lost ids,
        retention)."""
        return self._conn

    async def close(self) -> None:
        await self._conn.close()

    async def clock(self, minus_seconds: float = 0.0) -> datetime:
        """The database's now (less `minus_seconds`): the one clock every deadline is read on."""
        ((now,),) = await self._conn.fetch(_CLOCK, {"minus": minus_seconds})
        assert isinstance(now, datetime)
        return now

    async def lead(self, holder: str, ttl_seconds: float) -> bool:
        """Take or keep the sweeper lease for this queue; True while `holder` has it."""
        params = {"queue": self.queue, "holder": holder, "ttl": ttl_seconds}
        return bool(await self._conn.fetch(_LEAD, params))

    async def recover_expired(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Repair tasks whose lease ran out; each row: id, priority, new status, task_type."""
        rows = await self._conn.fetch(_RECOVER, {"queue": self.queue, "limit": limit})
        return [
            {"id": id_, "priority": priority, "status": status, "task_type": task_type}
            for id_, priority, status, task_type in rows
        ]

    async def dispatch_due(self, limit: int = 1000) -> list[Dispatch]:
        """Mark due delayed or retrying tasks as enqueued; the caller pushes them."""
        rows = await self._conn.fetch(_DUE, {"queue": self.queue, "limit": limit})
        return [Dispatch(id_, priority) for id_, priority in rows]

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
        ((now,),) = await self._conn.fetch(_BEAT, params)
        assert isinstance(now, datetime)
        return now

    async def worker_stopped(self, worker_id: str) -> None:
        await self._conn.fetch(_WORKER_STOPPED, {"id": worker_id})

    async def prune_workers(self, older_than: float) -> None:
        """Forget workers that stopped or went silent more than `older_than` seconds ago."""
        await self._conn.fetch(_PRUNE_WORKERS, {"age": older_than})
