"""Turning requests into pending tasks: validate against the task type, record, then dispatch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from taskq_core.broker import Broker, count_field
from taskq_core.db.storage import Storage
from taskq_core.errors import BackendUnavailableError, InvalidTaskError, UnknownTaskTypeError
from taskq_core.faults import fault_point
from taskq_core.inputs import DEFAULT_LIMITS, InputLimits, check_input
from taskq_core.plugins import Registry
from taskq_core.records import NewTask
from taskq_core.task import MIN_TIMEOUT_SECONDS, Task

log = logging.getLogger("taskq.enqueue")


def prepare(
    registry: Registry,
    task_type: str,
    input_data: Any,
    priority: int | None = None,
    *,
    max_attempts: int | None = None,
    timeout_seconds: float | None = None,
    run_at: datetime | None = None,
    delay_seconds: float | None = None,
    idempotency_key: str | None = None,
    idempotency_hash: str | None = None,
    submitted_by: str = "",
    limits: InputLimits = DEFAULT_LIMITS,
) -> NewTask:
    """Validate one request; raises InvalidTaskError listing every bad field (loc, msg, type).

    The input is checked by `inputs.check_input`, as everywhere. Unset options take the task
    type's defaults; a request may not ask for more attempts or a longer timeout than its type's
    caps, nor a timeout under MIN_TIMEOUT_SECONDS."""
    try:
        kind = registry.get(task_type)
    except UnknownTaskTypeError as exc:
        raise InvalidTaskError(
            [
                {
                    "type": "unknown_task_type",
                    "loc": ("task_type",),
                    "msg": str(exc),
                    "input": task_type,
                }
            ]
        ) from None
    errors = _option_errors(kind.cls, priority, max_attempts, timeout_seconds)
    try:
        stored = check_input(kind, input_data, limits)
    except InvalidTaskError as exc:
        raise InvalidTaskError([*exc.errors, *errors]) from None
    if errors:
        raise InvalidTaskError(errors)
    return NewTask(
        task_type=kind.name,
        # Stored as the model dumps it: defaults filled in, and the worker reads what was checked.
        input_data=stored,
        priority=priority if priority is not None else kind.cls.priority,
        max_attempts=max_attempts if max_attempts is not None else kind.cls.max_attempts,
        timeout_seconds=timeout_seconds
        if timeout_seconds is not None
        else kind.cls.timeout_seconds,
        run_at=run_at,
        delay_seconds=delay_seconds or 0.0,
        idempotency_key=idempotency_key,
        idempotency_hash=idempotency_hash,
        submitted_by=submitted_by,
    )


def _option_errors(
    cls: type[Task], priority: int | None, max_attempts: int | None, timeout: float | None
) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []

    def refuse(kind: str, field: str, msg: str, value: object) -> None:
        errors.append({"type": kind, "loc": (field,), "msg": msg, "input": value})

    if priority is not None and not 1 <= priority <= 5:
        refuse("priority_range", "priority", "must be 1..5", priority)
    if max_attempts is not None and not 1 <= max_attempts <= cls.max_attempts_cap:
        cap = cls.max_attempts_cap
        refuse("max_attempts_cap", "max_attempts", f"must be 1..{cap} for {cls.name}", max_attempts)
    if timeout is not None and not MIN_TIMEOUT_SECONDS <= timeout <= cls.max_timeout_seconds:
        refuse(
            "timeout_range",
            "timeout_seconds",
            f"must be {MIN_TIMEOUT_SECONDS:g}..{cls.max_timeout_seconds:g} seconds for {cls.name}",
            timeout,
        )
    return errors


async def submit(storage: Storage, broker: Broker, new: Sequence[NewTask]) -> list[dict[str, Any]]:
    """Record `new` as pending in one statement, then push the ids of those due now; returns the
    summaries. Delayed tasks are pushed by the sweeper when due."""
    return await _committed(storage, broker, await storage.create(new))


async def _committed(
    storage: Storage, broker: Broker, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    fault_point("after_commit")
    await _dispatch(storage, broker, rows)
    return rows


async def submit_idempotent(
    storage: Storage, broker: Broker, new: NewTask
) -> tuple[dict[str, Any], bool]:
    """Like `submit` for one task with an idempotency key: (summary, created). A replay of the
    same request returns the original task; the same key with another body raises
    IdempotencyConflictError."""
    row, created = await storage.create_idempotent(new)
    fault_point("after_commit")
    if created:
        await _dispatch(storage, broker, [row])
    return row, created


async def _dispatch(storage: Storage, broker: Broker, rows: list[dict[str, Any]]) -> None:
    """Push the rows due now. If the push fails the rows are taken back before the error
    propagates, so the caller sees a clean failure (503) and its retry cannot leave a twin; if
    even that fails, the sweeper pushes them later."""
    due = [row for row in rows if row.pop("enqueued_at") is not None]
    created: dict[str, int] = {}
    for row in rows:
        field = count_field("created", row["task_type"], row["priority"])
        created[field] = created.get(field, 0) + 1
    try:
        await broker.push_many(((row["id"], row["priority"]) for row in due), created)
    except Exception:
        try:
            await storage.discard_pending([row["id"] for row in rows])
        except Exception:
            log.exception("tasks %s could not be taken back; the sweeper will push them", due)
        raise


MAX_GROUP = 1000  # single-task requests folded into one INSERT

_Waiting = tuple[NewTask, "asyncio.Future[dict[str, Any]]"]


class GroupSubmitter:
    """Folds concurrent single-task requests into one INSERT and one Redis round trip.

    Requests that arrive while a group is being written wait for the next group, so an idle API
    adds no delay and a busy one shares each commit's WAL flush between many requests. Every
    caller still gets its own answer only after its row is committed and its id pushed; if the
    group meets an outage, every request in it fails (503) and none of its rows remain; if a row
    was refused, the group is written again one request at a time.
    """

    def __init__(self, storage: Storage, broker: Broker) -> None:
        self.storage = storage
        self.broker = broker
        self._inserts = storage.writer()
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, new: NewTask) -> dict[str, Any]:
        """Record and dispatch one task; returns its summary."""
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="group-submitter")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((new, future))
        return await future

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._inserts.close()

    async def _submit(self, new: list[NewTask]) -> list[dict[str, Any]]:
        return await _committed(self.storage, self.broker, await self._inserts.create(new))

    async def _write_groups(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            waiting = [(new, future) for new, future in group if not future.cancelled()]
            try:
                rows = await self._submit([new for new, _ in waiting])
            except Exception as exc:
                if len(waiting) > 1 and not is_outage(exc):
                    # One request's row was refused (nothing of the group was written): each
                    # request gets its own answer, so one bad row never fails the others.
                    await self._one_by_one(waiting)
                    continue
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), row in zip(waiting, rows, strict=True):
                if not future.done():
                    future.set_result(row)

    async def _one_by_one(self, waiting: list[_Waiting]) -> None:
        log.warning("a group of %d submits failed; writing them one by one", len(waiting))
        for new, future in waiting:
            try:
                (row,) = await self._submit([new])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(row)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says a backend is unreachable (retrying row by row would not help), rather
    than that a row was refused."""
    outages = (OperationalError, InterfaceError, RedisError, BackendUnavailableError, OSError)
    return isinstance(exc, outages)
