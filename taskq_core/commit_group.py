"""Blocking enqueues from many threads at once share one INSERT, one commit and one push.

Each `CommitGroup.submit` returns only once its own row is committed (and its id pushed, if due
now), as a lone call would: durability per call is kept. But while one thread's statement waits
for the commit's WAL flush, the threads that arrive meanwhile queue up, and the first of them
then writes all of them in one statement (leader/follower: the thread whose turn it is writes;
the others sleep until their row is in). One caller alone pays no delay. Up to WRITERS groups
are in flight at once, on their own connections, so one group's statement overlaps another's
flush (PostgreSQL flushes concurrent commits together).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row
from sqlalchemy import Engine

from taskq_core import broker
from taskq_core.db.tasks import INSERT_MANY, INSERT_TASKS, insert_many_params, insert_params
from taskq_core.records import NewTask

MAX_GROUP = 1000  # rows in one statement
WRITERS = 4  # groups being written at once (of 1, 2, 4 tried: 4 fastest from 32 threads)

Row = dict[str, Any]  # id, task_type, status, priority, created_at, enqueued_at


class _Slot:
    __slots__ = ("error", "event", "lead", "new", "row")

    def __init__(self, new: NewTask) -> None:
        self.new = new
        self.event = threading.Event()
        self.lead = False  # woken to write the next group, not with its row
        self.row: Row | None = None
        self.error: BaseException | None = None

    def outcome(self) -> Row:
        if self.error is not None:
            raise self.error
        assert self.row is not None
        return self.row


class CommitGroup:
    """Writes the tasks of concurrent `submit` calls in shared statements.

    `after_commit(rows)` runs once per group between the commit and the push (the client's fault
    point). A failed INSERT fails every call of its group, and none of its rows exists; a failed
    push is logged by `on_push_error` and left to the sweeper, as for a lone call.
    """

    def __init__(
        self,
        engine: Engine,
        redis_client: redis.Redis,
        queue: str,
        *,
        after_commit: Callable[[], None] = lambda: None,
        on_push_error: Callable[[Sequence[Row], redis.RedisError], None] = lambda rows, exc: None,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        # A group's statement goes to psycopg itself, compiled once: SQLAlchemy's handling of
        # each parameter and result row cost three times the INSERT's own client time per row.
        self._insert_many = str(INSERT_MANY.compile(dialect=engine.dialect))
        self._redis = redis_client
        self._queue_name = queue
        self._after_commit = after_commit
        self._on_push_error = on_push_error
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._writers = 0  # threads writing a group; at WRITERS, the next arrivals wait

    @property
    def waiting(self) -> int:
        """Calls queued for the next group (the one being written not counted)."""
        with self._lock:
            return len(self._waiting)

    def submit(self, new: NewTask) -> Row:
        """Insert `new` (committed) and push its id if it is due now; returns its row."""
        slot = _Slot(new)
        with self._lock:
            lead = self._writers < WRITERS
            if lead:
                self._writers += 1
            else:
                self._waiting.append(slot)
        if not lead:
            slot.event.wait()
            if not slot.lead:
                return slot.outcome()
        # This thread writes: its own task and those waiting in line (a writer handing over
        # took it out of the line first, so no other writer can pick it too).
        with self._lock:
            group = [slot, *self._waiting[: MAX_GROUP - 1]]
            del self._waiting[: MAX_GROUP - 1]
        try:
            self._write(group)
        finally:
            with self._lock:
                if self._waiting:  # the writer's turn passes to the first in line
                    following = self._waiting.pop(0)
                    following.lead = True
                    following.event.set()
                else:
                    self._writers -= 1
            for other in group:
                if other is not slot:
                    other.event.set()
        return slot.outcome()

    def _write(self, group: list[_Slot]) -> None:
        try:
            with self._engine.connect() as conn:
                if len(group) == 1:  # the lone call's statement, as before groups
                    params = [insert_params(group[0].new, self._queue_name)]
                    rows = [dict(conn.execute(INSERT_TASKS, params).one()._mapping)]
                else:
                    params_many = insert_many_params([s.new for s in group], self._queue_name)
                    driver = conn.connection.driver_connection
                    assert isinstance(driver, psycopg.Connection)
                    with driver.cursor(row_factory=dict_row) as cursor:
                        rows = cursor.execute(self._insert_many, params_many).fetchall()
        except BaseException as exc:
            for slot in group:
                slot.error = exc
            raise_if_fatal(exc)
            return
        rows.sort(key=lambda row: row["id"])  # identity ids follow the arrays' order
        for slot, row in zip(group, rows, strict=True):
            slot.row = row
        self._after_commit()
        due = [(row["id"], row["priority"]) for row in rows if row["enqueued_at"] is not None]
        if due:
            try:
                broker.push_blocking(self._redis, self._queue_name, due)
            except redis.RedisError as exc:
                self._on_push_error(rows, exc)


def raise_if_fatal(exc: BaseException) -> None:
    """KeyboardInterrupt and SystemExit stop the writing thread too, not only its group."""
    if not isinstance(exc, Exception):
        raise exc
