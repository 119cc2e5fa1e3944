"""The worker's background loops: the heartbeat (its row, its leases, cancels and takeovers seen
there), the process title, and the cancellation listener."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from taskq_core import logs
from taskq_core.worker.holding import BACKOFF_MAX, BACKOFF_START, OUTAGE_ERRORS

if TYPE_CHECKING:
    from taskq_core.worker.loop import Worker

log = logging.getLogger("taskq.worker")

TITLE_INTERVAL = 0.5  # seconds between updates of the process title


async def heartbeat(worker: Worker) -> None:
    """Keep the worker listed and its leases fresh; stop tasks cancelled or taken over."""
    interval = worker.options.lease_seconds / 3
    hostname, pid = socket.gethostname(), os.getpid()
    outage = logs.Outage(log, "PostgreSQL (heartbeat: leases may lapse)", interval)
    runners = worker.runners
    while True:
        held = list(worker.running)
        listed = held + runners.held
        try:
            await worker.sweeps.beat(worker.worker_id, hostname, pid, worker.capacity, listed)
            leases = await worker.claims.renew(held, worker.worker_id, worker.options.lease_seconds)
            asked_at = time.monotonic_ns()
            rows = await worker.claims.renew_held(runners.worker_ids, worker.options.lease_seconds)
            runners.renewed(rows, asked_at)
        except OUTAGE_ERRORS as exc:
            outage.failed(exc, interval)
        else:
            outage.recovered()
            for task_id in held:
                running = worker.running.get(task_id)
                if running is None:
                    continue
                if task_id not in leases:
                    worker.interrupt(running, "lost")
                elif leases[task_id]:
                    worker.interrupt(running, "cancelled")
        await asyncio.sleep(interval)


async def title(worker: Worker) -> None:
    """Keep the process title saying how busy the worker is (as `ps` and `top` show it)."""
    shown = ""
    while True:
        busy = worker.executing + worker.runners.busy
        title = f"taskq-worker {worker.options.queue} [{busy} of {worker.capacity} busy]"
        if worker.stopping.is_set():
            title += " stopping"
        if title != shown:
            logs.set_title(title)
            shown = title
        await asyncio.sleep(TITLE_INTERVAL)


async def cancel_listener(worker: Worker) -> None:
    """Cancellation requests arrive here at once; the heartbeat is the slower fallback."""
    backoff = BACKOFF_START
    while True:
        try:
            async for task_id in worker.broker.cancel_requests():
                backoff = BACKOFF_START
                # Another installation on the same Redis server publishes its own ids here too:
                # act only on a cancellation PostgreSQL has (else the heartbeat finds it).
                try:
                    if not await worker.claims.cancel_requested(task_id):
                        continue
                except OUTAGE_ERRORS:
                    continue
                running = worker.running.get(task_id)
                if running is not None:
                    worker.interrupt(running, "cancelled")
                else:
                    worker.runners.cancel(task_id)
        except OUTAGE_ERRORS as exc:
            log.debug("cancel listener lost Redis (%s)", exc)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)
