"""Task rows as clients see them: create (idempotently), read, list, cancel, retry, delete."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import (
    DateTime,
    Interval,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ColumnElement, Update

from taskq_core.db.artifacts import LISTED_COLUMNS as ARTIFACT_COLUMNS
from taskq_core.db.models import task_artifacts, task_attempts, tasks
from taskq_core.errors import IdempotencyConflictError, TaskNotFoundError, TaskStateError
from taskq_core.records import NewTask, TaskStatus

SUMMARY_COLUMNS = (
    tasks.c.id,
    tasks.c.task_type,
    tasks.c.status,
    tasks.c.priority,
    tasks.c.created_at,
)
# A listing's row: the task's state without its bodies (input, result, error), so a page's size
# is bounded by its length, whatever the tasks carry.
LIST_COLUMNS = (
    *SUMMARY_COLUMNS,
    tasks.c.attempts,
    tasks.c.max_attempts,
    tasks.c.run_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.worker_id,
)
DETAIL_COLUMNS = (
    *SUMMARY_COLUMNS,
    tasks.c.input_data,
    tasks.c.result,
    tasks.c.error,
    tasks.c.attempts,
    tasks.c.max_attempts,
    tasks.c.timeout_seconds,
    tasks.c.run_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.worker_id,
    tasks.c.cancel_requested_at,
    tasks.c.progress,
    tasks.c.submitted_by,  # not shown (no response model has it): decides who may read the task
)
HISTORY_COLUMNS = (
    task_attempts.c.attempt,
    task_attempts.c.outcome,
    task_attempts.c.worker_id,
    task_attempts.c.started_at,
    task_attempts.c.finished_at,
    task_attempts.c.error,
)

# Start time: an explicit run_at, else now plus the delay (zero for most tasks). Computed by the
# database, so one clock decides both when a task is due and when it is found due.
_START = func.coalesce(
    bindparam("run_at", type_=DateTime(timezone=True)),
    func.now() + bindparam("delay", type_=Interval),
)
_VALUES = dict(
    queue=bindparam("queue"),
    task_type=bindparam("task_type"),
    input_data=bindparam("input_data"),
    priority=bindparam("priority"),
    max_attempts=bindparam("max_attempts"),
    timeout_seconds=bindparam("timeout_seconds"),
    idempotency_key=bindparam("idempotency_key"),
    idempotency_hash=bindparam("idempotency_hash"),
    submitted_by=bindparam("submitted_by"),
    run_at=_START,
    # Due now: the caller pushes the id at once. Later: the sweeper pushes it when due.
    enqueued_at=case((func.now() >= _START, func.now()), else_=None),
)
_INSERT = insert(tasks).values(**_VALUES)
_INSERT_UNLESS_KEY_EXISTS = (
    pg_insert(tasks)
    .values(**_VALUES)
    .on_conflict_do_nothing(
        index_elements=["submitted_by", "idempotency_key"],
        index_where=tasks.c.idempotency_key.is_not(None),  # the unique index is partial
    )
)
_RETURNING = (*SUMMARY_COLUMNS, tasks.c.enqueued_at)


def insert_params(task: NewTask, queue: str) -> dict[str, Any]:
    """The parameters of INSERT_TASKS for one new task."""
    return {
        "queue": queue,
        "task_type": task.task_type,
        "input_data": task.input_data,
        "priority": task.priority,
        "max_attempts": task.max_attempts,
        "timeout_seconds": task.timeout_seconds,
        "idempotency_key": task.idempotency_key,
        "idempotency_hash": task.idempotency_hash,
        "submitted_by": task.submitted_by,
        "run_at": task.run_at,
        "delay": timedelta(seconds=task.delay_seconds),
    }


# Public for the outbox (enqueue inside a caller's own transaction): the same statement.
INSERT_TASKS = _INSERT.returning(*_RETURNING, sort_by_parameter_order=True)

# Many tasks in one statement whose text does not depend on how many: the rows travel as one JSON
# array (one json.dumps: a third of the client's CPU of eight parallel arrays dumped element by
# element, and less of PostgreSQL's too), so the statement is parsed and planned once per
# connection, not per size. Identity ids follow the insertion order, which follows the array's.
_INSERT_MANY = text(
    """
    INSERT INTO tasks (queue, task_type, input_data, priority, max_attempts, timeout_seconds,
                       run_at, enqueued_at, submitted_by)
    SELECT :queue, n.task_type, n.input_data, n.priority, n.max_attempts, n.timeout_seconds,
           n.start, CASE WHEN n.start <= now() THEN now() END, n.submitted_by
    FROM (
        SELECT u.*, coalesce(u.run_at, now() + make_interval(secs => u.delay)) AS start
        FROM ROWS FROM (
            jsonb_to_recordset(CAST(:tasks AS jsonb)) AS (
                task_type text, input_data jsonb, priority int, max_attempts int,
                timeout_seconds float8, run_at timestamptz, delay float8, submitted_by text
            )
        ) WITH ORDINALITY
            AS u(task_type, input_data, priority, max_attempts, timeout_seconds, run_at, delay,
                 submitted_by, position)
    ) AS n
    ORDER BY n.position
    RETURNING id, task_type, status, priority, created_at, enqueued_at
    """
)

INSERT_MANY = _INSERT_MANY  # for blocking callers (Client.enqueue's groups); rows in any order


def insert_many_params(new: Sequence[NewTask], queue: str) -> dict[str, Any]:
    """The parameters of INSERT_MANY for `new`, in order (no idempotency keys)."""
    tasks = [
        {
            "task_type": t.task_type,
            "input_data": t.input_data,
            "priority": t.priority,
            "max_attempts": t.max_attempts,
            "timeout_seconds": t.timeout_seconds,
            "run_at": None if t.run_at is None else t.run_at.isoformat(),
            "delay": t.delay_seconds,
            "submitted_by": t.submitted_by,
        }
        for t in new
    ]
    return {"queue": queue, "tasks": json.dumps(tasks, separators=(",", ":"))}


class TaskWriter:
    """Writes groups of new tasks on a connection of its own, straight to psycopg: the API's
    hot statement. SQLAlchemy's pool checkout, execution context and result rows cost this
    statement about as much client time as the commit itself (1 ms of CPU per request on the
    bench's machine), and one writer at a time (the group submitter's) needs no pool.

    The connection comes from the engine, so it is made as the pool's are (connect time-out,
    `prepare`), then detached: it is one more than the pool's size, never lent to others.
    Errors are SQLAlchemy's, as `TaskQueries.create` raises them, so callers tell an outage
    from a refused row the same way; the connection is made again after it breaks.
    """

    def __init__(self, engine: AsyncEngine, queue: str) -> None:
        self.engine = engine
        self.queue = queue
        self._sql = str(_INSERT_MANY.compile(dialect=engine.dialect))
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def create(self, new: Sequence[NewTask]) -> list[dict[str, Any]]:
        """As `TaskQueries.create`: one autocommit statement, summaries in order."""
        params = insert_many_params(new, self.queue)
        try:
            conn = self._conn
            if conn is None or conn.closed:
                conn = self._conn = await self._connect()
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(self._sql, params)
                rows = await cursor.fetchall()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                await self.close()
            raise DBAPIError.instance(
                self._sql, params, exc, psycopg.Error, hide_parameters=True
            ) from exc
        except asyncio.CancelledError:
            await self.close()  # cut off mid-statement: the server rolls it back
            raise
        rows.sort(key=lambda row: row["id"])
        return rows

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        pooled = await self.engine.raw_connection()
        conn = pooled.driver_connection  # read before detaching, which forgets it
        pooled.detach()
        assert isinstance(conn, psycopg.AsyncConnection)
        await conn.set_autocommit(True)
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class TaskQueries:
    engine: AsyncEngine
    autocommit: AsyncEngine  # the same pool; each statement commits on its own
    queue: str

    def writer(self) -> TaskWriter:
        """A writer of new tasks with its own connection (`close` it)."""
        return TaskWriter(self.engine, self.queue)

    def _params(self, task: NewTask) -> dict[str, Any]:
        return insert_params(task, self.queue)

    async def create(self, new: Sequence[NewTask]) -> list[dict[str, Any]]:
        """Insert tasks as `pending` in one statement; their summaries in order, with
        `enqueued_at` set for those due now (the caller pushes exactly those)."""
        params = insert_many_params(new, self.queue)
        # One statement is its own transaction: autocommit spares the BEGIN and COMMIT trips.
        async with self.autocommit.connect() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(_INSERT_MANY, params)]
        rows.sort(key=lambda row: row["id"])
        return rows

    async def create_idempotent(self, task: NewTask) -> tuple[dict[str, Any], bool]:
        """Insert unless a task with the same idempotency key exists; (summary, created).

        Raises IdempotencyConflictError when the key was used for another request body.
        """
        params = self._params(task)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(_INSERT_UNLESS_KEY_EXISTS.returning(*_RETURNING), params)
            ).first()
            if row is not None:
                return dict(row._mapping), True
            existing = (
                await conn.execute(
                    select(*_RETURNING, tasks.c.idempotency_hash).where(
                        tasks.c.submitted_by == task.submitted_by,
                        tasks.c.idempotency_key == task.idempotency_key,
                    )
                )
            ).first()
        if existing is None:  # deleted between the two statements: rare, and safe to retry
            return await self.create_idempotent(task)
        if existing.idempotency_hash != task.idempotency_hash:
            raise IdempotencyConflictError(
                f"Idempotency-Key {task.idempotency_key!r} was already used for another request "
                f"(task {existing.id})"
            )
        summary = dict(existing._mapping)
        summary.pop("idempotency_hash")
        return summary, False

    async def discard_pending(self, ids: Sequence[int]) -> None:
        """Delete tasks that were never dispatched (the broker push failed after the insert)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(tasks).where(tasks.c.id.in_(ids), tasks.c.status == TaskStatus.PENDING)
            )

    async def get(self, task_id: int) -> dict[str, Any] | None:
        """A task with its attempt history, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*DETAIL_COLUMNS).where(tasks.c.id == task_id))).first()
            if row is None:
                return None
            history = await conn.execute(
                select(*HISTORY_COLUMNS)
                .where(task_attempts.c.task_id == task_id)
                .order_by(task_attempts.c.id)
            )
            task = dict(row._mapping)
            task["history"] = [dict(h._mapping) for h in history]
            artifacts = await conn.execute(
                select(*ARTIFACT_COLUMNS)
                .where(task_artifacts.c.task_id == task_id)
                .order_by(task_artifacts.c.name)
            )
            task["artifacts"] = [dict(a._mapping) for a in artifacts]
        return task

    async def get_many(self, task_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Tasks with their attempt histories and artifacts, by id, in three statements however
        many; ids that do not exist are absent."""
        if not task_ids:
            return {}
        ids = list(task_ids)
        async with self.engine.connect() as conn:
            found = {
                row.id: {**row._mapping, "history": [], "artifacts": []}
                for row in await conn.execute(select(*DETAIL_COLUMNS).where(tasks.c.id.in_(ids)))
            }
            history = await conn.execute(
                select(task_attempts.c.task_id, *HISTORY_COLUMNS)
                .where(task_attempts.c.task_id.in_(list(found)))
                .order_by(task_attempts.c.id)
            )
            for row in history:
                attempt = dict(row._mapping)
                found[attempt.pop("task_id")]["history"].append(attempt)
            artifacts = await conn.execute(
                select(task_artifacts.c.task_id, *ARTIFACT_COLUMNS)
                .where(task_artifacts.c.task_id.in_(list(found)))
                .order_by(task_artifacts.c.task_id, task_artifacts.c.name)
            )
            for published in artifacts:
                artifact = dict(published._mapping)
                found[artifact.pop("task_id")]["artifacts"].append(artifact)
        return found

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        task_type: str | None = None,
        priority: int | None = None,
        before_id: int | None = None,
        limit: int = 50,
        columns: Sequence[ColumnElement[Any]] = LIST_COLUMNS,
    ) -> list[dict[str, Any]]:
        """Tasks newest first, filtered; page with `before_id` (the previous page's last id).
        The API lists LIST_COLUMNS; the dashboard its own summary (db/overview.py)."""
        query = select(*columns).order_by(tasks.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if task_type is not None:
            query = query.where(tasks.c.task_type == task_type)
        if priority is not None:
            query = query.where(tasks.c.priority == priority)
        if before_id is not None:
            query = query.where(tasks.c.id < before_id)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def cancel(self, task_id: int) -> dict[str, Any]:
        """Cancel a pending task at once, or flag a running one for its worker to stop.

        Raises TaskNotFoundError, or TaskStateError when the task has already finished.
        """
        pending = tasks.c.status == TaskStatus.PENDING
        statement = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_([TaskStatus.PENDING, TaskStatus.RUNNING]),
            )
            .values(
                status=case((pending, TaskStatus.CANCELLED), else_=tasks.c.status),
                finished_at=case((pending, func.now()), else_=tasks.c.finished_at),
                cancel_requested_at=func.coalesce(tasks.c.cancel_requested_at, func.now()),
            )
            .returning(tasks.c.id)
        )
        changed, task = await self._change(task_id, statement)
        # A running task may finish between the flag and the read: the cancel came too late,
        # and answering as if it had cancelled would be untrue (the chaos run found this).
        if not changed or task["status"] in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            raise TaskStateError(f"task {task_id} has already finished ({task['status']})")
        return task

    async def retry(self, task_id: int) -> dict[str, Any]:
        """Make a failed or cancelled task pending again, due now, with its attempts counted
        anew; its attempt history stays. The caller pushes its id (`enqueued_at` is set, so the
        sweeper pushes it if the caller cannot).

        Raises TaskNotFoundError, or TaskStateError when it is pending, running or completed.
        """
        statement = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_([TaskStatus.FAILED, TaskStatus.CANCELLED]),
            )
            .values(
                status=TaskStatus.PENDING,
                attempts=0,
                result=None,
                error=None,
                started_at=None,
                finished_at=None,
                worker_id=None,
                lease_expires_at=None,
                cancel_requested_at=None,
                run_at=func.now(),
                enqueued_at=func.now(),
            )
            .returning(tasks.c.id)
        )
        changed, task = await self._change(task_id, statement)
        if not changed:
            raise TaskStateError(
                f"task {task_id} is {task['status']}: only failed or cancelled tasks can be retried"
            )
        return task

    async def _change(self, task_id: int, statement: Update) -> tuple[bool, dict[str, Any]]:
        """Run `statement` (an UPDATE of the task, returning its id): whether it changed the task,
        and the task as it is then. Raises TaskNotFoundError."""
        async with self.engine.begin() as conn:
            changed = (await conn.execute(statement)).first() is not None
        task = await self.get(task_id)
        if task is None:
            raise TaskNotFoundError(f"task {task_id} not found")
        return changed, task

    async def count_by_status(self, since_id: int = 0) -> dict[str, int]:
        """How many tasks with id above `since_id` are in each status."""
        query = (
            select(tasks.c.status, func.count())
            .where(tasks.c.id > since_id)
            .group_by(tasks.c.status)
        )
        async with self.engine.connect() as conn:
            counts: dict[str, int] = {status.value: 0 for status in TaskStatus}
            counts.update({row[0]: row[1] for row in await conn.execute(query)})
        return counts
