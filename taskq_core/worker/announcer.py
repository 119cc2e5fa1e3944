"""Announcing what the worker committed: status changes for the API's waiters (Redis pub/sub)
and the counters and durations `/metrics` reads, each published without holding up the worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

from taskq_core.broker import Broker, count_field
from taskq_core.records import AttemptOutcome, ClaimedTask, Finish
from taskq_core.worker.holding import OUTAGE_ERRORS
from taskq_core.worker.sweeper import STATUS_EVENTS


class Announcer:
    """Publishes in the background, one round trip at a time: what is announced while one is on
    its way goes out together in the next (a Redis round trip costs the worker 100-150 µs of CPU,
    as much as a short task). `flush` waits until everything announced is out."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._changes: list[tuple[int, str]] = []
        self._counts: dict[str, int] = {}
        self._durations: list[tuple[str, float]] = []
        self._sender: asyncio.Task[None] | None = None

    def recorded(
        self, items: Sequence[tuple[ClaimedTask, Finish]], seconds: Mapping[int, float]
    ) -> None:
        """Outcomes just committed: announce them and count them (see `broker.stats_key`), with
        how long each task ran (`seconds` by task id, where known)."""
        counts: dict[str, int] = {}
        durations: list[tuple[str, float]] = []
        for task, finish in items:
            if finish.outcome == AttemptOutcome.HANDED_BACK:
                continue  # not the task's doing: neither an outcome nor a duration
            event = STATUS_EVENTS[finish.status]
            field = count_field(event, task.task_type, task.priority)
            counts[field] = counts.get(field, 0) + 1
            ran = seconds.get(task.id)
            if ran is not None:
                durations.append((task.task_type, ran))
        self.announce([(t.id, f.status.value) for t, f in items], counts, durations)

    def announce(
        self,
        changes: Sequence[tuple[int, str]],
        counts: dict[str, int] | None = None,
        durations: Sequence[tuple[str, float]] = (),
    ) -> None:
        """Publish committed status changes (in the order announced) and add to the counters,
        without holding up the caller; a lost announcement only makes waiters answer at their
        deadline (and the counters miss it)."""
        if not (changes or counts or durations):
            return
        self._changes.extend(changes)
        for field, n in (counts or {}).items():
            self._counts[field] = self._counts.get(field, 0) + n
        self._durations.extend(durations)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="announce")

    async def flush(self) -> None:
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)

    async def _send(self) -> None:
        while self._changes or self._counts or self._durations:
            changes, counts, durations = self._changes, self._counts, self._durations
            self._changes, self._counts, self._durations = [], {}, []
            with contextlib.suppress(*OUTAGE_ERRORS):
                await self.broker.announce(changes, counts, durations)
