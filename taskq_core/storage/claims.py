"""The worker's side of a task row: claim it, keep the lease, record how the attempt ended."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import BigInteger

from taskq_core.models import AttemptOutcome
from taskq_core.storage.records import ClaimedTask, Finish

# The conditional UPDATE is what makes a duplicated id in Redis harmless: of all the workers
# popping the same id, exactly one sees it pending and wins. `run_at <= now()` keeps a stale id
# from starting a task whose retry is not due yet.
# The claim commits without waiting for its WAL flush (synchronous_commit off, for this
# transaction only, set inside the statement so it needs no extra round trip and works through
# PgBouncer): a claim lost in a database crash only leaves the task pending and unqueued, which the
# sweeper repairs; the worker's outcome write is then fenced out and the task runs again.
_CLAIM = text(
    """
    WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
    UPDATE tasks SET
        status = 'running',
        attempts = attempts + 1,
        started_at = now(),
        worker_id = :worker,
        lease_expires_at = now() + make_interval(secs => :lease)
    WHERE id = ANY(:ids) AND status = 'pending' AND run_at <= now()
        AND EXISTS (SELECT FROM relaxed)
    RETURNING id, task_type, input_data, priority, attempts, max_attempts, timeout_seconds
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))

# Fenced: only the holder of the current attempt may write its outcome, and the attempt record is
# written in the same statement, so there is never an outcome without its history row. Many
# outcomes share one statement (group commit): the rows arrive as parallel arrays.
_FINISH = text(
    """
    WITH outcome AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:attempts AS int[]), CAST(:statuses AS text[]),
            CAST(:outcomes AS text[]), CAST(:results AS jsonb[]), CAST(:errors AS jsonb[]),
            CAST(:uncounts AS int[]), CAST(:retry_ins AS float8[]), CAST(:push_now AS bool[])
        ) AS o(id, attempt, status, outcome, result, error, uncount, retry_in, push_now)
    ), done AS (
        UPDATE tasks t SET
            status = o.status,
            result = o.result,
            error = o.error,
            attempts = t.attempts - o.uncount,
            finished_at = CASE WHEN o.status = 'pending' THEN NULL ELSE now() END,
            run_at = CASE WHEN o.status = 'pending'
                     THEN now() + make_interval(secs => o.retry_in) ELSE t.run_at END,
            enqueued_at = CASE WHEN o.push_now THEN now() END,
            lease_expires_at = NULL,
            worker_id = CASE WHEN o.status = 'pending' THEN NULL ELSE t.worker_id END
        FROM outcome o
        WHERE t.id = o.id AND t.status = 'running' AND t.worker_id = :worker
            AND t.attempts = o.attempt
        RETURNING t.id, t.started_at, o.attempt, o.outcome, o.error
    )
    INSERT INTO task_attempts (task_id, attempt, worker_id, started_at, outcome, error)
    SELECT id, attempt, :worker, started_at, outcome, error FROM done
    RETURNING task_id
    """
)

_RENEW = text(
    """
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease)
    WHERE id = ANY(:ids) AND status = 'running' AND worker_id = :worker
    RETURNING id, cancel_requested_at IS NOT NULL AS cancel
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class ClaimQueries:
    engine: AsyncEngine
    queue: str

    async def claim(
        self, ids: Sequence[int], worker_id: str, lease_seconds: float
    ) -> list[ClaimedTask]:
        """Take whichever of `ids` are pending and due; the others are gone or someone else's."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                _CLAIM, {"ids": list(ids), "worker": worker_id, "lease": lease_seconds}
            )
            return [
                ClaimedTask(
                    id=row.id,
                    task_type=row.task_type,
                    input_data=row.input_data,
                    priority=row.priority,
                    attempt=row.attempts,
                    max_attempts=row.max_attempts,
                    timeout_seconds=row.timeout_seconds,
                )
                for row in rows
            ]

    async def finish(self, worker_id: str, items: Sequence[tuple[ClaimedTask, Finish]]) -> set[int]:
        """Record how attempts ended, all in one statement; returns the ids recorded (the others
        were no longer this worker's)."""
        if not items:
            return set()
        params = {
            "worker": worker_id,
            "ids": [task.id for task, _ in items],
            "attempts": [task.attempt for task, _ in items],
            "statuses": [finish.status.value for _, finish in items],
            "outcomes": [finish.outcome.value for _, finish in items],
            "results": [_json(finish.result) for _, finish in items],
            "errors": [_json(finish.error) for _, finish in items],
            # A hand-back is the worker's doing, not the task's: it does not use up an attempt.
            "uncounts": [int(f.outcome == AttemptOutcome.HANDED_BACK) for _, f in items],
            "retry_ins": [finish.retry_in for _, finish in items],
            "push_now": [f.outcome == AttemptOutcome.HANDED_BACK for _, f in items],
        }
        async with self.engine.begin() as conn:
            return {row.task_id for row in await conn.execute(_FINISH, params)}

    async def renew(
        self, ids: Sequence[int], worker_id: str, lease_seconds: float
    ) -> dict[int, bool]:
        """Extend the leases on `ids`; {id: cancel requested} for those still held."""
        if not ids:
            return {}
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                _RENEW, {"ids": list(ids), "worker": worker_id, "lease": lease_seconds}
            )
            return {row.id: row.cancel for row in rows}
