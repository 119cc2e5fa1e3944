"""The worker's side of a task row: claim it, keep the lease, record how the attempt ended."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import BigInteger

from taskq_core.models import AttemptOutcome, TaskStatus
from taskq_core.storage.records import ClaimedTask, Finish

# The conditional UPDATE is what makes a duplicated id in Redis harmless: of all the workers
# popping the same id, exactly one sees it pending and wins. `run_at <= now()` keeps a stale id
# from starting a task whose retry is not due yet.
_CLAIM = text(
    """
    UPDATE tasks SET
        status = 'running',
        attempts = attempts + 1,
        started_at = now(),
        worker_id = :worker,
        lease_expires_at = now() + make_interval(secs => :lease)
    WHERE id = ANY(:ids) AND status = 'pending' AND run_at <= now()
    RETURNING id, task_type, input_data, priority, attempts, max_attempts, timeout_seconds
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))

# Fenced: only the holder of the current attempt may write its outcome, and the attempt record is
# written in the same statement, so there is never an outcome without its history row.
_FINISH = text(
    """
    WITH done AS (
        UPDATE tasks SET
            status = CAST(:status AS text),
            result = :result,
            error = :error,
            attempts = attempts - :uncount,
            finished_at = CASE WHEN CAST(:status AS text) = 'pending' THEN NULL ELSE now() END,
            run_at = CASE WHEN CAST(:status AS text) = 'pending'
                     THEN now() + make_interval(secs => :retry_in) ELSE run_at END,
            enqueued_at = CASE WHEN :push_now THEN now() END,
            lease_expires_at = NULL,
            worker_id = CASE WHEN CAST(:status AS text) = 'pending' THEN NULL ELSE worker_id END
        WHERE id = :id AND status = 'running' AND worker_id = :worker AND attempts = :attempt
        RETURNING id, started_at
    )
    INSERT INTO task_attempts (task_id, attempt, worker_id, started_at, outcome, error)
    SELECT id, :attempt, :worker, started_at, :outcome, :error FROM done
    RETURNING task_id
    """
).bindparams(bindparam("result", type_=JSONB), bindparam("error", type_=JSONB))

_RENEW = text(
    """
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease)
    WHERE id = ANY(:ids) AND status = 'running' AND worker_id = :worker
    RETURNING id, cancel_requested_at IS NOT NULL AS cancel
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))


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

    async def finish(self, task: ClaimedTask, worker_id: str, finish: Finish) -> bool:
        """Record the attempt's end; False when the task was no longer this worker's."""
        handed_back = finish.outcome == AttemptOutcome.HANDED_BACK
        params = {
            "id": task.id,
            "worker": worker_id,
            "attempt": task.attempt,
            "status": finish.status.value,
            "outcome": finish.outcome.value,
            "result": finish.result,
            "error": finish.error,
            # A hand-back is the worker's doing, not the task's: it does not use up an attempt.
            "uncount": 1 if handed_back else 0,
            "retry_in": finish.retry_in,
            "push_now": finish.status == TaskStatus.PENDING and handed_back,
        }
        async with self.engine.begin() as conn:
            return (await conn.execute(_FINISH, params)).first() is not None

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
