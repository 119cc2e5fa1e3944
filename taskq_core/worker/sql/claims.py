"""The worker's side of a task row: claim it, keep the lease, record how the attempt ended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, LiteralString

from taskq_core.records import AttemptOutcome, ClaimedTask, Finish
from taskq_core.worker.sql.connection import Connection

# The conditional UPDATE is what makes a duplicated id in Redis harmless: of all the workers
# popping the same id, exactly one sees it pending and wins. `run_at <= now()` keeps a stale id
# from starting a task whose retry is not due yet.
# The claim is durable before the task starts (its commit waits for the WAL flush, as every
# commit of taskq's does): a claim committed without it could vanish in a database crash after
# its task had started, and the task then ran twice under one attempt number with one record,
# a run the history never showed (the fault suite's kill test caught it).
# A popped id of a paused task type is not claimed but parked: it stays pending, off Redis
# (enqueued_at NULL), and the sweeper's due dispatch pushes it again once the type is resumed.
# The lease counts from clock_timestamp(), when the row is taken, not from the statement's start:
# a claim that waited behind a lock would otherwise begin with a lease already short or gone.
# A claim may take the popped ids of some task types only, and at most `limit` of them (the first
# ones popped): a runner (worker/runner.py) runs the sync types, so it claims those (`listed`: the
# types in `types`), as many as it will run soon, and returns the other ids that could be claimed
# now, with their types: ids of async types, or of types no plugin here provides, for its
# supervisor to claim, and the sync ones beyond the limit, for Redis again. The supervisor claims
# all but the sync types (not `listed`; with no types, every popped id). Both parts read one
# snapshot: an id is either claimed or returned, never both.
_CLAIM: LiteralString = """
    WITH paused AS (SELECT task_type FROM paused_task_types WHERE queue = %(queue)s),
    parked AS (
        UPDATE tasks SET enqueued_at = NULL
        WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending'
            AND task_type IN (SELECT task_type FROM paused)
    ), claimed AS (
        UPDATE tasks SET
            status = 'running',
            attempts = attempts + 1,
            started_at = now(),
            worker_id = %(worker)s,
            lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
            progress = NULL
        WHERE status = 'pending' AND id IN (
            SELECT id FROM tasks
            WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending' AND run_at <= now()
                AND task_type NOT IN (SELECT task_type FROM paused)
                AND (task_type = ANY(%(types)s::text[])) = %(listed)s
            ORDER BY array_position(%(ids)s::bigint[], id)
            LIMIT %(limit)s
        )
        RETURNING id, task_type, input_data, priority, attempts, max_attempts, timeout_seconds
    )
    SELECT id, task_type, input_data, priority, attempts, max_attempts, timeout_seconds, true
    FROM claimed
    UNION ALL
    SELECT id, task_type, NULL, NULL, NULL, NULL, NULL, false FROM tasks
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending' AND run_at <= now()
        AND task_type NOT IN (SELECT task_type FROM paused)
        AND id NOT IN (SELECT id FROM claimed)
"""

# Claims that never started given back, without an attempt: the claim is undone, the id goes
# back to the popping end of its list (by the caller), where it was. Fenced like an outcome: only
# the holder's claim, while the row is still running under it. A task whose cancellation was
# asked for meanwhile ends cancelled instead (it never ran), and is not pushed.
_UNCLAIM: LiteralString = """
    UPDATE tasks SET
        status = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
        finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
        attempts = attempts - 1,
        worker_id = NULL,
        lease_expires_at = NULL,
        enqueued_at = CASE WHEN cancel_requested_at IS NULL
                      THEN coalesce(enqueued_at, now()) END
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'running' AND worker_id = %(worker)s
    RETURNING id, priority, status
"""

# A hand-back keeps its dispatch time: the worker puts it back at the popping end of its list,
# ahead of the ids pushed after it, so each list stays in `enqueued_at` order (which the sweeper's
# lost-dispatch check reads, see worker/lost.py).
# Fenced: only the holder of the current attempt may write its outcome, and the attempt record is
# written in the same statement, so there is never an outcome without its history row. Many
# outcomes share one statement (group commit): the rows arrive as one JSON array, one object per
# outcome (a JSON null or a missing key is SQL NULL). One json.dumps costs the worker a third of
# the CPU of eleven parallel arrays dumped element by element, and PostgreSQL less as well. The
# ids come again as an array so that the rows are found by primary key: joined on the JSON rows
# alone, the planner reads every entry of the running-lease index, dead ones included (tens of
# thousands after a busy minute, milliseconds per statement).
_FINISH: LiteralString = """
    WITH outcome AS (
        SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS o(
            id bigint, attempt int, status text, outcome text, result jsonb, error jsonb,
            uncount int, retry_in float8, push_now bool, artifacts jsonb, progress jsonb
        )
    ), done AS (
        UPDATE tasks t SET
            status = o.status,
            result = o.result,
            error = o.error,
            attempts = t.attempts - o.uncount,
            finished_at = CASE WHEN o.status = 'pending' THEN NULL ELSE now() END,
            run_at = CASE WHEN o.status = 'pending'
                     THEN now() + make_interval(secs => o.retry_in) ELSE t.run_at END,
            enqueued_at = CASE WHEN o.push_now THEN coalesce(t.enqueued_at, now()) END,
            lease_expires_at = NULL,
            worker_id = CASE WHEN o.status = 'pending' THEN NULL ELSE t.worker_id END,
            progress = coalesce(o.progress, t.progress)
        FROM outcome o
        WHERE t.id = o.id AND t.id = ANY(%(ids)s::bigint[])
            AND t.status = 'running' AND t.worker_id = %(worker)s AND t.attempts = o.attempt
        RETURNING t.id, t.started_at, o.attempt, o.outcome, o.error, o.artifacts
    ), published AS (
        INSERT INTO task_artifacts (task_id, name, attempt, content_type, size, sha256, key)
        SELECT d.id, a.name, d.attempt, a.content_type, a.size, a.sha256, a.key
        FROM done d, jsonb_to_recordset(d.artifacts)
            AS a(name text, content_type text, size bigint, sha256 text, key text)
        WHERE d.outcome = 'completed'
        ON CONFLICT (task_id, name) DO UPDATE SET
            attempt = EXCLUDED.attempt, content_type = EXCLUDED.content_type,
            size = EXCLUDED.size, sha256 = EXCLUDED.sha256, key = EXCLUDED.key
    )
    INSERT INTO task_attempts (task_id, attempt, worker_id, started_at, outcome, error)
    SELECT id, attempt, %(worker)s, started_at, outcome, error FROM done
    RETURNING task_id
"""

# Popped ids with no row at all: deleted tasks' (rare: finished ids are long popped when
# retention deletes them), or a worker reading another database than the one that enqueued them.
_UNKNOWN: LiteralString = """
    SELECT count(*) FROM unnest(%(ids)s::bigint[]) AS popped(id)
    WHERE NOT EXISTS (SELECT FROM tasks WHERE tasks.id = popped.id)
"""

_RENEW: LiteralString = """
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'running' AND worker_id = %(worker)s
    RETURNING id, cancel_requested_at IS NOT NULL
"""

# A supervisor renews for each of its runners at once, and learns which tasks each holds.
# Rows a runner is writing now are skipped, not waited for: locked in another order they would
# deadlock (and they are about to end, or their lease is renewed at the next beat).
_RENEW_HELD: LiteralString = """
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE id IN (
        SELECT id FROM tasks
        WHERE status = 'running' AND worker_id = ANY(%(workers)s::text[])
        FOR UPDATE SKIP LOCKED
    ) AND status = 'running'
    RETURNING id, worker_id, cancel_requested_at IS NOT NULL
"""

# What a dead runner held: settled by its supervisor (worker/runners.py).
_HELD_BY: LiteralString = """
    SELECT id, task_type, input_data, priority, attempts, max_attempts, timeout_seconds
    FROM tasks WHERE status = 'running' AND worker_id = %(worker)s
"""

# Whether a cancellation published on Redis is one this database holds: the pub/sub channel is the
# Redis server's, not its database's, so installations sharing a server hear each other's ids.
_CANCEL_REQUESTED: LiteralString = """
    SELECT EXISTS (
        SELECT FROM tasks WHERE id = %(id)s AND cancel_requested_at IS NOT NULL
            AND status IN ('pending', 'running')
    )
"""


def _artifacts(records: tuple[dict[str, Any], ...]) -> list[dict[str, Any]] | None:
    if not records:
        return None
    return [{k: r[k] for k in ("name", "content_type", "size", "sha256", "key")} for r in records]


class Claims:
    """A worker's claims, lease renewals and outcome writes. Claims and outcomes have a connection
    each, so a group commit never waits behind a claim nor a claim behind a group commit."""

    def __init__(self, conninfo: str, queue: str = "default", *, prepare: bool = True) -> None:
        self._claims = Connection(conninfo, prepare=prepare)
        self._outcomes = Connection(conninfo, prepare=prepare)
        self.queue = queue

    async def close(self) -> None:
        await self._claims.close()
        await self._outcomes.close()

    async def claim(
        self,
        ids: Sequence[int],
        worker_id: str,
        lease_seconds: float,
        types: Sequence[str] = (),
        *,
        listed: bool = False,
        limit: int | None = None,
    ) -> tuple[list[ClaimedTask], list[tuple[int, str]]]:
        """Take whichever of `ids` are pending, due and of a type in `types` (`listed`) or not
        in it (by default: of any type), the first `limit` of them at most; also returns the
        ids that could be claimed now and were not, with their types, left pending. The others
        are gone, not due, or someone else's."""
        rows = await self._claims.fetch(
            _CLAIM,
            {
                "ids": list(ids),
                "worker": worker_id,
                "lease": lease_seconds,
                "queue": self.queue,
                "types": list(types),
                "listed": listed,
                "limit": len(ids) if limit is None else limit,
            },
        )
        claimed = [ClaimedTask(*row[:7]) for row in rows if row[7]]
        return claimed, [(row[0], row[1]) for row in rows if not row[7]]

    async def unclaim(self, ids: Sequence[int], worker_id: str) -> dict[int, int]:
        """Undo `worker_id`'s claims of `ids`, which never started; {id: priority} of those
        to push again (the others were not its claims, or were cancelled meanwhile)."""
        if not ids:
            return {}
        rows = await self._outcomes.fetch(_UNCLAIM, {"ids": list(ids), "worker": worker_id})
        return {task_id: priority for task_id, priority, status in rows if status == "pending"}

    async def renew_held(
        self, worker_ids: Sequence[str], lease_seconds: float
    ) -> list[tuple[int, str, bool]]:
        """Extend the leases of every task `worker_ids` hold: (id, holder, cancel requested)."""
        if not worker_ids:
            return []
        rows = await self._claims.fetch(
            _RENEW_HELD, {"workers": list(worker_ids), "lease": lease_seconds}
        )
        return [(task_id, worker, cancel) for task_id, worker, cancel in rows]

    async def cancel_requested(self, task_id: int) -> bool:
        """Whether `task_id` is a task here whose cancellation was asked for and which has not
        ended yet."""
        ((requested,),) = await self._claims.fetch(_CANCEL_REQUESTED, {"id": task_id})
        return bool(requested)

    async def held_by(self, worker_id: str) -> list[ClaimedTask]:
        """The tasks `worker_id` holds (running under its claim)."""
        rows = await self._claims.fetch(_HELD_BY, {"worker": worker_id})
        return [ClaimedTask(*row) for row in rows]

    async def unknown(self, ids: Sequence[int]) -> int:
        """How many of `ids` have no row in this database."""
        rows = await self._claims.fetch(_UNKNOWN, {"ids": list(ids)})
        count: int = rows[0][0]
        return count

    async def open(self) -> None:
        """Connect now, both connections at once, rather than at the first claim and the first
        outcome: a runner's first task waits for neither then."""
        await asyncio.gather(self._claims.open(), self._outcomes.open())

    async def ping(self) -> None:
        """One round trip on the claims' connection: whether claiming can work again."""
        await self._claims.fetch("SELECT 1", {})

    async def finish(self, worker_id: str, items: Sequence[tuple[ClaimedTask, Finish]]) -> set[int]:
        """Record how attempts ended, all in one statement; returns the ids recorded (the others
        were no longer this worker's)."""
        if not items:
            return set()
        outcomes = [
            {
                "id": task.id,
                "attempt": task.attempt,
                "status": finish.status.value,
                "outcome": finish.outcome.value,
                "result": finish.result,
                "error": finish.error,
                # A hand-back is the worker's doing, not the task's: it does not use up an attempt.
                "uncount": int(finish.outcome == AttemptOutcome.HANDED_BACK),
                "retry_in": finish.retry_in,
                "push_now": finish.outcome == AttemptOutcome.HANDED_BACK,
                # The artifacts a completed attempt wrote become visible with its outcome, or not.
                "artifacts": _artifacts(finish.artifacts),
                "progress": finish.progress,
            }
            for task, finish in items
        ]
        params = {
            "worker": worker_id,
            "ids": [task.id for task, _ in items],
            "outcomes": json.dumps(outcomes, separators=(",", ":")),
        }
        return {row[0] for row in await self._outcomes.fetch(_FINISH, params)}

    async def renew(
        self, ids: Sequence[int], worker_id: str, lease_seconds: float
    ) -> dict[int, bool]:
        """Extend the leases on `ids`; {id: cancel requested} for those still held."""
        if not ids:
            return {}
        rows = await self._claims.fetch(
            _RENEW, {"ids": list(ids), "worker": worker_id, "lease": lease_seconds}
        )
        return {task_id: cancel for task_id, cancel in rows}
