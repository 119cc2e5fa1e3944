"""Enqueueing from Python code: inside the caller's own SQLAlchemy transaction, or on its own."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from taskq_core import broker, devstate, enqueue
from taskq_core.commit_group import CommitGroup, Row
from taskq_core.db import engines
from taskq_core.db.tasks import INSERT_TASKS, insert_params
from taskq_core.faults import fault_point
from taskq_core.plugins import Registry, load_registry
from taskq_core.records import NewTask
from taskq_core.settings import Settings

log = logging.getLogger("taskq.client")


def configured(settings: Settings | None = None) -> dict[str, Any]:
    """The arguments of `Client` and `AsyncClient` for the configured servers and queue (or the
    servers of a running `taskq dev`)."""
    settings = settings or Settings()
    database_url, redis_url = devstate.resolve_urls(settings)
    return {
        "redis_url": redis_url,
        "database_url": database_url,
        "queue": settings.queue,
        "prepare": settings.database_prepare,
    }


class Client:
    """Validates task requests against the installed task types and enqueues them.

    `enqueue_in(session, ...)` is the outbox pattern: the task row is written in the caller's
    transaction, so it exists if and only if the caller commits, and its id is pushed to Redis
    after the commit. If the process dies between the two, the sweeper pushes it.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        database_url: str | None = None,
        registry: Registry | None = None,
        queue: str = "default",
        prepare: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else load_registry()
        self.queue = queue
        self._redis = redis.Redis.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=5, **broker.NO_HANDSHAKE
        )
        self._engine: Engine | None = (
            engines.sync_engine(database_url, prepare=prepare) if database_url else None
        )
        self._group: CommitGroup | None = None
        if self._engine is not None:
            self._group = CommitGroup(
                self._engine,
                self._redis,
                queue,
                after_commit=lambda: fault_point("outbox_after_commit"),
                on_push_error=_push_failed,
            )
        # Session.info keys of this client: ids to push once the session commits, and whether
        # this client listens to the session's commits yet.
        self._pending_key = f"taskq_pending_{id(self)}"
        self._listening_key = f"taskq_listening_{id(self)}"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Client:
        """A client for the configured servers (or those of a running `taskq dev`)."""
        return cls(**configured(settings))

    def close(self) -> None:
        self._redis.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self, task_type: str, input_data: Any, **options: Any) -> NewTask:
        """Validate a request (InvalidTaskError lists every bad field)."""
        return enqueue.prepare(self.registry, task_type, input_data, **options)

    def enqueue_in(
        self,
        session: Session,
        task_type: str,
        input_data: Any,
        *,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
    ) -> int:
        """Add a task to `session`'s transaction; returns its id. Dispatched after commit."""
        new = self.prepare(
            task_type,
            input_data,
            priority=priority,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            run_at=run_at,
            delay_seconds=delay_seconds,
        )
        row = session.execute(INSERT_TASKS, [insert_params(new, self.queue)]).one()
        if row.enqueued_at is not None:
            self._dispatch_after_commit(session, row.id, row.priority)
        task_id: int = row.id
        return task_id

    def enqueue(self, task_type: str, input_data: Any, **options: Any) -> int:
        """Enqueue in a transaction of its own on the configured database; returns the id once
        the task is committed (and pushed, if due now).

        Thread-safe: the calls of threads enqueueing at once share statements and commits
        (`commit_group`), each still returning only once its own row is durable."""
        if self._engine is None or self._group is None:
            raise ValueError("this Client has no database_url; use enqueue_in(session, ...)")
        new = self.prepare(task_type, input_data, **options)
        if new.idempotency_key is None:
            task_id: int = self._group.submit(new)["id"]
            return task_id
        # A bare connection rather than a Session: no unit of work to run, and the push needs
        # no commit hook because it simply follows the commit. One statement in autocommit is
        # its own transaction: no BEGIN and COMMIT round trips.
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            row = conn.execute(INSERT_TASKS, [insert_params(new, self.queue)]).one()
        fault_point("outbox_after_commit")
        if row.enqueued_at is not None:
            try:
                broker.push_blocking(self._redis, self.queue, [(row.id, row.priority)])
            except redis.RedisError as exc:
                log.warning("could not push task %d after commit (%s)", row.id, exc)
        task_id = row.id
        return task_id

    def _dispatch_after_commit(self, session: Session, task_id: int, priority: int) -> None:
        if not session.info.get(self._listening_key):
            # Once per session and never removed: removing a listener while it runs is unsafe.
            event.listen(session, "after_commit", self._after_commit)
            event.listen(session, "after_rollback", self._forget)
            session.info[self._listening_key] = True
        session.info.setdefault(self._pending_key, []).append((task_id, priority))

    def _forget(self, session: Session) -> None:
        session.info.pop(self._pending_key, None)

    def _after_commit(self, session: Session) -> None:
        items = session.info.pop(self._pending_key, [])
        if not items:
            return
        fault_point("outbox_after_commit")
        try:
            broker.push_blocking(self._redis, self.queue, items)
        except redis.RedisError as exc:
            # Committed but not pushed: the sweeper's lost-dispatch repair will push them.
            log.warning("could not push %d task id(s) after commit (%s)", len(items), exc)


def _push_failed(rows: Sequence[Row], exc: redis.RedisError) -> None:
    # Committed but not pushed: the sweeper's lost-dispatch repair will push them.
    ids = ", ".join(str(row["id"]) for row in rows)
    log.warning("could not push task(s) %s after commit (%s)", ids, exc)
