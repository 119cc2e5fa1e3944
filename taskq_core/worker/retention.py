"""Retention: the sweeper deletes finished tasks older than their status's limit, in small
batches, so the tasks table stays as large as the retention window and no larger."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import psycopg

from taskq_core.worker.sql.connection import CONNECTION_ERRORS
from taskq_core.worker.sql.retention import Retention

log = logging.getLogger("taskq.retention")

BATCH = 500  # rows per DELETE: each statement's locks last milliseconds
MAX_PER_SWEEP = 50_000  # rows per status per sweep, so one sweep never runs for long


async def purge_expired(
    retention: Retention, limits: Mapping[str, float | None], *, batch: int = BATCH
) -> dict[str, int]:
    """One sweep's worth of deletions; {status: rows deleted} for statuses with a limit."""
    deleted: dict[str, int] = {}
    for status, seconds in limits.items():
        if seconds is None:
            continue
        total = 0
        while total < MAX_PER_SWEEP:
            try:
                count = await retention.purge_batch(status, seconds, batch)
            except CONNECTION_ERRORS:
                raise  # an outage: the sweeper logs it and tries again
            except psycopg.Error:
                # Refused (a statement timeout, say): the next sweep tries again; the worker's
                # tasks must not stop over it.
                log.exception("retention: deleting %s tasks failed", status)
                break
            total += count
            if count < batch:
                break
            await asyncio.sleep(0)  # let the worker's other loops in between batches
        if total:
            log.info("retention: deleted %d %s task(s) older than %gs", total, status, seconds)
        deleted[status] = total
    return deleted


IDEMPOTENCY_WINDOW = 24 * 3600.0  # seconds: how long clients are told an Idempotency-Key holds


def warn_if_short(limits: Mapping[str, float | None]) -> None:
    """Say so at start when a retention is shorter than a day: an Idempotency-Key replayed after
    its task was deleted creates (and runs) a new task (docs/reliability.md)."""
    for status, seconds in limits.items():
        if seconds is not None and seconds < IDEMPOTENCY_WINDOW:
            log.warning(
                "retention: %s tasks are deleted after %gs, under a day: an Idempotency-Key "
                "replayed after that creates a new task",
                status,
                seconds,
            )
