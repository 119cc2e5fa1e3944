"""Waiting for tasks: one Redis subscriber per API process wakes every request waiting on a task.

Workers, the sweeper and the API announce each committed status change on the queue's status
channel (`broker.status_channel`). This process subscribes once, and hands each change to the
requests watching that task id, so a thousand waiters cost a thousand small queues, not a thousand
connections or a thousand pollers. A waiter re-reads its task's row only once it is subscribed
(an announcement made before that would be missed), then once per change it is told of. Those
reads are coalesced: all the rows wanted while one read is in flight come in the next, one
statement for many waiters, so a thousand tasks finishing together take a few queries and one
pooled connection rather than a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from redis.exceptions import RedisError

from taskq_core import logs
from taskq_core.broker import Broker
from taskq_core.records import TaskStatus

log = logging.getLogger("taskq.api")

TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
BACKOFF_START, BACKOFF_MAX = 0.2, 5.0  # seconds between reconnections while Redis is away
RESYNC = "resync"  # told to every watcher after the subscription was lost: re-read the row


class Watch:
    """The changes announced for one task since the watch began (statuses, or RESYNC)."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.changes: asyncio.Queue[str] = asyncio.Queue()

    async def next(self, within: float) -> str | None:
        """The next change, or None after `within` seconds without one."""
        try:
            return await asyncio.wait_for(self.changes.get(), within)
        except TimeoutError:
            return None


Row = dict[str, Any]
ReadMany = Callable[[Sequence[int]], Awaitable[dict[int, Row]]]
READ_BATCH = 1000  # ids per coalesced read


class StatusHub:
    """The process's one subscription to status announcements, fanned out to watchers, and
    its one reader of the rows they want."""

    def __init__(self, subscriber: Broker, read_many: ReadMany) -> None:
        self._broker = subscriber
        self._read_many = read_many
        self._watches: dict[int, set[Watch]] = {}
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wanted: dict[int, list[asyncio.Future[Row | None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        what = "Redis (status announcements: waiting requests answer at their deadline)"
        self._outage = logs.Outage(log, what, BACKOFF_MAX)

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._watches.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-hub")

    async def close(self) -> None:
        for task in (self._task, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def read(self, task_id: int) -> Row | None:
        """The task's row with its history (None if there is none), read together with every
        other row wanted meanwhile."""
        future: asyncio.Future[Row | None] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(task_id, []).append(future)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_wanted(), name="status-hub-reader")
        return await future

    async def _read_wanted(self) -> None:
        while self._wanted:
            await asyncio.sleep(0)  # let the waiters woken with this one ask too
            wanted = dict(list(self._wanted.items())[:READ_BATCH])
            for task_id in wanted:
                del self._wanted[task_id]
            try:
                rows = await self._read_many(list(wanted))
            except Exception as exc:
                # Each waiter answers it as any read's failure (PostgreSQL down: 503).
                for futures in wanted.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for task_id, futures in wanted.items():
                for future in futures:
                    if not future.done():
                        future.set_result(rows.get(task_id))

    @contextlib.contextmanager
    def watch(self, task_id: int) -> Iterator[Watch]:
        watch = Watch(task_id)
        self._watches.setdefault(task_id, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(task_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[task_id]

    async def subscribed(self, within: float) -> bool:
        """Wait until announcements are being received; False if not `within` seconds."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), within)
        except TimeoutError:
            return False
        return True

    def _tell(self, task_id: int, change: str) -> None:
        for watch in self._watches.get(task_id, ()):
            watch.changes.put_nowait(change)

    def _on_subscribed(self) -> None:
        self._outage.recovered()
        if not self._subscribed.is_set():
            self._subscribed.set()
            # Changes made while the subscription was down were missed: every watcher re-reads.
            for task_id in list(self._watches):
                self._tell(task_id, RESYNC)

    async def _run(self) -> None:
        backoff = BACKOFF_START
        outage = logs.Outage(
            log, "Redis (status announcements: waiters answer at their deadline)", BACKOFF_MAX
        )
        while True:
            try:
                async for changes in self._broker.status_changes(self._on_subscribed):
                    outage.recovered()
                    backoff = BACKOFF_START
                    for task_id, status in changes:
                        self._tell(task_id, status)
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                self._outage.failed(exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


async def wait_for_end(hub: StatusHub, task_id: int, seconds: float) -> Row | None:
    """The task's row once it is terminal, or as it is after `seconds`; None if there is none."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with hub.watch(task_id) as watch:
        await hub.subscribed(seconds)
        row = await hub.read(task_id)
        while row is not None and row["status"] not in TERMINAL:
            left = deadline - loop.time()
            if left <= 0 or await watch.next(left) is None:
                # The deadline: one last read, in case an announcement was lost on the way.
                return await hub.read(task_id)
            row = await hub.read(task_id)
        return row


async def changes_of(hub: StatusHub, task_id: int, keepalive: float) -> AsyncIterator[Row | None]:
    """The task's row now, then each time its status or its progress changes, ending after a
    terminal status; None every `keepalive` seconds without a change (for the stream to send a
    comment). Workers announce stored progress as a `running` announcement (see
    `Broker.announce_progress`), which wakes the watch like a status change."""
    with hub.watch(task_id) as watch:
        await hub.subscribed(keepalive)
        row = await hub.read(task_id)
        if row is None:
            return
        yield row
        last = row["status"]
        progress = row.get("progress")
        while last not in TERMINAL:
            change = await watch.next(keepalive)
            if change is None:
                yield None
                continue
            row = await hub.read(task_id)
            if row is None:  # deleted while watched
                return
            if row["status"] != last or row.get("progress") != progress:
                last, progress = row["status"], row.get("progress")
                yield row


async def get_hub(request: Request) -> StatusHub:
    hub: StatusHub = request.app.state.status_hub
    return hub


HubDep = Annotated[StatusHub, Depends(get_hub)]
