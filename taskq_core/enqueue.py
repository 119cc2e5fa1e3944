"""Turning requests into pending tasks: validate against the task type, record, then dispatch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from taskq_core.broker import Broker
from taskq_core.errors import InvalidTaskError, UnknownTaskTypeError
from taskq_core.faults import fault_point
from taskq_core.plugins import Registry
from taskq_core.storage import NewTask, Storage

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
) -> NewTask:
    """Validate one request; raises InvalidTaskError listing every bad field (loc, msg, type).

    Unset options take the task type's defaults."""
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
    try:
        data = kind.input_model.model_validate(input_data)
    except ValidationError as exc:
        raise InvalidTaskError(
            [
                {
                    "type": e["type"],
                    "loc": ("input_data", *e["loc"]),
                    "msg": e["msg"],
                    "input": e.get("input"),
                }
                for e in exc.errors(include_url=False, include_context=False)
            ]
        ) from None
    if priority is not None and not 1 <= priority <= 5:
        raise InvalidTaskError(
            [
                {
                    "type": "priority_range",
                    "loc": ("priority",),
                    "msg": "must be 1..5",
                    "input": priority,
                }
            ]
        )
    return NewTask(
        task_type=kind.name,
        # Stored as the model dumps it: defaults filled in, and the worker reads what was checked.
        input_data=data.model_dump(mode="json"),
        priority=priority if priority is not None else kind.cls.priority,
        max_attempts=max_attempts if max_attempts is not None else kind.cls.max_attempts,
        timeout_seconds=timeout_seconds
        if timeout_seconds is not None
        else kind.cls.timeout_seconds,
        run_at=run_at,
        delay_seconds=delay_seconds or 0.0,
        idempotency_key=idempotency_key,
        idempotency_hash=idempotency_hash,
    )


async def submit(storage: Storage, broker: Broker, new: Sequence[NewTask]) -> list[dict[str, Any]]:
    """Record `new` as pending in one statement, then push the ids of those due now; returns the
    summaries. Delayed tasks are pushed by the sweeper when due."""
    rows = await storage.create(new)
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
    try:
        await broker.push_many((row["id"], row["priority"]) for row in due)
    except Exception:
        try:
            await storage.discard_pending([row["id"] for row in rows])
        except Exception:
            log.exception("tasks %s could not be taken back; the sweeper will push them", due)
        raise
