"""Turning requests into pending tasks: validate against the task type, record, then dispatch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from taskq_core.broker import Broker
from taskq_core.errors import InvalidTaskError, UnknownTaskTypeError
from taskq_core.plugins import Registry
from taskq_core.storage import NewTask, Storage

log = logging.getLogger("taskq.enqueue")


def prepare(
    registry: Registry, task_type: str, input_data: Any, priority: int | None = None
) -> NewTask:
    """Validate one request; raises InvalidTaskError listing every bad field (loc, msg, type)."""
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
        max_attempts=kind.cls.max_attempts,
        timeout_seconds=kind.cls.timeout_seconds,
    )


async def submit(storage: Storage, broker: Broker, new: Sequence[NewTask]) -> list[dict[str, Any]]:
    """Record `new` as pending in one statement, then push their ids; returns the summaries.

    If the push fails the rows are taken back before the error propagates, so a caller's retry
    cannot leave twins behind and nothing sits pending that no worker will hear of.
    """
    rows = await storage.create(new)
    try:
        await broker.push_many((row["id"], row["priority"]) for row in rows)
    except Exception:
        try:
            await storage.discard_pending([row["id"] for row in rows])
        except Exception:
            log.exception("tasks %s are pending but were never dispatched", [r["id"] for r in rows])
        raise
    return rows
