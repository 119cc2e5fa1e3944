"""The worker: pops ids by priority, claims them with a lease, runs them, records each attempt."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from taskq_core.db import urls
from taskq_core.plugins import Registry
from taskq_core.records import AttemptOutcome, ClaimedTask, Finish, TaskStatus
from taskq_core.worker import beats, outcomes
from taskq_core.worker.announcer import Announcer
from taskq_core.worker.artifact_gc import ArtifactCollector
from taskq_core.worker.execution import Instances, Job, Outcome, unknown_type_error
from taskq_core.worker.fetching import Fetcher, give_back
from taskq_core.worker.holding import (
    OUTAGE_ERRORS,
    Running,
    StopReason,
    WorkerOptions,
    new_worker_id,
)
from taskq_core.worker.progress import ProgressBoard
from taskq_core.worker.recorder import Recorder
from taskq_core.worker.reporting import JobReporter, log_attempt, store_url
from taskq_core.worker.retention import purge_expired
from taskq_core.worker.runners import Runners
from taskq_core.worker.scheduler import Scheduler
from taskq_core.worker.sql import Sweeps
from taskq_core.worker.sql.artifacts import ArtifactDeletions
from taskq_core.worker.sql.progress import ProgressWrites
from taskq_core.worker.sql.retention import Retention
from taskq_core.worker.sql.schedules import ScheduleStatements
from taskq_core.worker.sweeper import Sweeper
from taskq_core.worker.tuner import Tuner

log = logging.getLogger("taskq.worker")

POP_TIMEOUT = 1.0  # seconds; also the longest a stop request waits for the pop loop
# While the queue is deep, the worker lets free slots gather for up to the tuner's `linger` (the
# recorder's wait between outcome writes too) or until a quarter of them are free before it pops
# again, so each pop and claim serves several tasks instead of one per finished task. An idle
# worker never waits.
REFILL_FRACTION = 4

# How often to look again whether every runner runs a task (only then does
# the worker pop for its async types), and the first pause after a pop whose ids were theirs.
RUNNER_IDLE_WAIT = 0.05
HEAD_BACKOFF = 0.05


class Worker:
    """One worker process. Async task types run in its event loop; sync ones in runner processes
    that pop, claim, run and record their own (so a timeout or a cancellation can stop even
    CPU-bound code, by killing the runner), supervised from here (runners.py)."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        registry: Registry,
        options: WorkerOptions | None = None,
        worker_id: str | None = None,
        runners: Runners,
    ) -> None:
        """`runners`: for the sync task types, not started yet (their fork server perhaps
        forked already); the worker starts them if a sync type is installed, and stops them."""
        self.database_url = database_url
        self.redis_url = redis_url
        self.registry = registry
        self.options = options or WorkerOptions()
        self.worker_id = worker_id or new_worker_id()
        self.runners = runners
        self.instances = Instances()
        self.running: dict[int, Running] = {}
        self.stopping = asyncio.Event()  # set once asked to stop: take nothing new
        self.failed = False  # a background loop died; the process should exit non-zero
        self._slot_freed = asyncio.Event()
        # Tasks executing now. The slot frees as soon as a task ends, before its outcome is
        # written, so the next claim overlaps the group commit; `running` keeps the task (and
        # its lease renewed) until the outcome is durable.
        self.executing = 0
        self._chores: set[asyncio.Task[None]] = set()  # work started and not awaited
        self.tuner = Tuner.for_worker(self.options.concurrency)
        # With runners (a sync type is installed) the event loop pops only for its async types,
        # while no runner waits for ids (a waiting runner passes them on).
        self.with_runners = registry.has_sync
        self.sync_types = registry.sync_names
        self._runners_ids_seen = False  # the last pop brought ids of the runners' types
        self._claiming = 0  # ids being claimed now: their slots are spoken for
        self._pop_backoff = 0.0

    @property
    def capacity(self) -> int:
        """How many tasks it may run at once now: its async limit, and one per runner."""
        return self.tuner.limit + (self.runners.size if self.with_runners else 0)

    def stop(self) -> None:
        """Take nothing new; running tasks get `grace_seconds` to finish, then are handed back."""
        self.stopping.set()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        opts = self.options
        conninfo = urls.conninfo(self.database_url)
        self.fetcher = Fetcher(
            database_url=self.database_url,
            redis_url=self.redis_url,
            queue=opts.queue,
            prepare=opts.prepare,
            stopping=self.stopping,
        )
        self.claims, self.broker = self.fetcher.claims, self.fetcher.broker
        self.sweeps = Sweeps(conninfo, opts.queue, prepare=opts.prepare)
        self.announcer = Announcer(self.broker)
        self.recorder = Recorder(
            self.claims,
            self.worker_id,
            OUTAGE_ERRORS,
            self._recorded,
            linger=lambda: self.tuner.linger,
        )
        self.progress_writes = ProgressWrites(conninfo, prepare=opts.prepare)
        self.artifact_deletions = ArtifactDeletions(conninfo, prepare=opts.prepare)
        self.board = ProgressBoard(
            self.progress_writes, self.worker_id, OUTAGE_ERRORS, self.broker.announce_progress
        )
        background: list[asyncio.Task[None]] = []
        try:
            if self.registry.has_sync:
                await self._start_runners()
            retention = Retention(self.sweeps.connection, opts.queue)
            sweeper = Sweeper(
                self.sweeps,
                self.broker,
                self.worker_id,
                interval=opts.sweep_interval,
                chores=[
                    lambda: purge_expired(retention, opts.retention),
                    ArtifactCollector(self.artifact_deletions, store_url).collect,
                ],
            )
            scheduler = Scheduler(
                ScheduleStatements(self.sweeps.connection, opts.queue),
                self.broker,
                self.registry,
                errors=OUTAGE_ERRORS,
            )
            background = [
                asyncio.create_task(self.recorder.run(), name="recorder"),
                asyncio.create_task(self.board.run(), name="progress"),
                asyncio.create_task(beats.heartbeat(self), name="heartbeat"),
                asyncio.create_task(beats.cancel_listener(self), name="cancel-listener"),
                asyncio.create_task(sweeper.run(self.stopping), name="sweeper"),
                asyncio.create_task(beats.title(self), name="title"),
                asyncio.create_task(scheduler.run(self.stopping), name="scheduler"),
                asyncio.create_task(self.tuner.run(), name="tuner"),
            ]
            for task in background:
                task.add_done_callback(self._background_ended)
            bounds = self.tuner.bounds
            log.info(
                "worker %s started: %d runner process(es), async concurrency %d (adapting "
                "within %d-%d), task types: %s",
                self.worker_id,
                self.runners.size if self.with_runners else 0,
                self.tuner.limit,
                bounds.floor,
                bounds.ceiling,
                self.registry.known_names(),
            )
            if self.with_runners and len(self.sync_types) == len(self.registry.types):
                await self.stopping.wait()  # the runners pop, and pass on unknown types' ids
            else:
                await self._fetch_loop()
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(*OUTAGE_ERRORS):
                await self.sweeps.worker_stopped(self.worker_id)
            await self.runners.close()
            with contextlib.suppress(*OUTAGE_ERRORS):
                await self.board.flush()  # the last reports of the tasks that just ended
            await self.progress_writes.close()
            await self.artifact_deletions.close()
            await self.announcer.flush()
            await self.fetcher.close()
            await self.sweeps.close()
            log.info("worker %s stopped", self.worker_id)

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that must run for the worker's whole life ended: stop rather than limp on."""
        if task.cancelled() or (task.exception() is None and self.stopping.is_set()):
            return
        exc = task.exception()
        log.critical(
            "worker %s: %s loop died (%r); stopping",
            self.worker_id,
            task.get_name(),
            exc,
            exc_info=exc,
        )
        self.failed = True
        self.stop()

    async def _start_runners(self) -> None:
        await self.runners.start(
            registry=self.registry,
            claims=self.claims,
            broker=self.broker,
            announcer=self.announcer,
            board=self.board,
            on_foreign=self._foreign,
            room=self._room,
        )

    def _room(self) -> int:
        """How many more tasks the event loop may take now."""
        if self.stopping.is_set():
            return 0
        return max(0, self.tuner.limit - self.executing - self._claiming)

    def _foreign(self, priority: int, ids: list[int]) -> None:
        """Ids a runner popped and does not run (async types, or types no plugin here has):
        claim what there is room for, give back the rest."""
        free = self._room()
        self.tuner.popped(max(free, 1), len(ids))  # as many as it has room for: more wait
        taken, rest = ids[:free], ids[free:]
        self._claiming += len(taken)  # at once: the fetch loop must not pop for these slots
        self._background(self._take_foreign(priority, taken, rest))

    async def _take_foreign(self, priority: int, taken: list[int], rest: list[int]) -> None:
        try:
            if rest:
                with contextlib.suppress(*OUTAGE_ERRORS):  # else the sweeper pushes them
                    await self.broker.push_oldest_first(rest, priority)
            if not taken:
                return
            claimed = await self.fetcher.claim(
                priority, taken, functools.partial(self._claim_now, priority=priority)
            )
            if not claimed:
                return
            if self.stopping.is_set():
                # Claimed after the drain took its list of what runs: too late to start.
                ids = [task.id for task in claimed]
                await give_back(self.claims, self.broker, self.worker_id, ids)
            else:
                self._start(claimed)
        finally:
            self._claiming -= len(taken)

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period, then hand back the rest."""
        if self._chores:  # claims of ids a runner passed on: they start, or go back, first
            await asyncio.wait(self._chores, timeout=self.options.grace_seconds)
        jobs = [r.job for r in self.running.values() if r.job is not None]
        count = len(jobs) + self.runners.holding
        if count:
            log.info(
                "worker %s stopping: %d task(s) running, %.0fs to finish",
                self.worker_id,
                count,
                self.options.grace_seconds,
            )
        await asyncio.gather(self.runners.stop(self.options.grace_seconds), self._drain_loop(jobs))

    async def _drain_loop(self, jobs: list[asyncio.Task[None]]) -> None:
        """Let the event loop's `jobs` finish within the grace period, then hand back the rest."""
        if not jobs:
            return
        _, late = await asyncio.wait(jobs, timeout=self.options.grace_seconds)
        for running in list(self.running.values()):
            if running.job in late:
                self.interrupt(running, "shutdown")
        if late:
            await asyncio.wait(late)

    # ---- fetching ----------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        deep = False  # the last pop got all it asked for: more are waiting
        lingering_since: float | None = None
        while not self.stopping.is_set():
            self._slot_freed.clear()
            await self._give_back_unknown()
            if self.with_runners:
                self.runners.read_events()  # ids a runner passed on take their slots first
            limit = self.tuner.limit
            refill = max(1, limit // REFILL_FRACTION)
            # Executing tasks are capped at `concurrency`, and so are outcomes waiting for the
            # group commit: if PostgreSQL falls behind, the worker claims less.
            free = min(
                limit - self.executing - self._claiming,
                2 * limit - len(self.running) - self._claiming,
            )
            wait = POP_TIMEOUT if free <= 0 else 0.0
            if free > 0 and self.with_runners:
                wait = self._runners_wait()
            elif deep and 0 < free < refill:
                now = time.monotonic()
                lingering_since = lingering_since or now
                wait = lingering_since + self.tuner.linger - now
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), wait)
                continue
            lingering_since = None
            # As many ids as there are free slots: one when idle, many when the queue is deep.
            popped = await self.fetcher.pop(free, POP_TIMEOUT)
            if popped is None:
                continue
            priority, ids = popped
            deep = len(ids) == free
            self.tuner.popped(free, len(ids))
            if not ids:
                continue
            claimed = await self.fetcher.claim(
                priority, ids, functools.partial(self._claim, priority=priority)
            )
            if claimed:
                self._start(claimed)
                # The tasks start first: the announcement and the next pop each cost a write to
                # Redis that would otherwise come before a task's start.
                await asyncio.sleep(0)
                self.announcer.announce([(task.id, TaskStatus.RUNNING.value) for task in claimed])

    async def _give_back_unknown(self) -> None:
        """Give back what a claim whose answer was lost may have taken (Fetcher.unsure), once
        PostgreSQL answers; only while no claim is in flight: its tasks would look unknown too."""
        if self.fetcher.unsure and not self._claiming:
            with contextlib.suppress(*OUTAGE_ERRORS):  # again at the next turn
                await self.fetcher.give_back_unknown(self.worker_id, self.running)

    def _runners_wait(self) -> float:
        """With runners: how long to wait before the next pop (for async types). It
        pops only while every runner runs a task (else they pop, and pass on the ids of its
        types). A pop may bring ids of the runners' types, which go back: after such a pop, wait
        a little, and longer each time, so as not to take and give back the same ids in a
        loop."""
        if not self.runners.may_pop():
            return RUNNER_IDLE_WAIT
        if not self._runners_ids_seen:
            return 0.0
        self._runners_ids_seen = False
        self._pop_backoff = min(max(2 * self._pop_backoff, HEAD_BACKOFF), POP_TIMEOUT)
        return self._pop_backoff

    def _start(self, claimed: list[ClaimedTask]) -> None:
        for task in claimed:
            self.executing += 1
            stale = self.running.get(task.id)
            if stale is not None:
                # Our own earlier attempt, stalled past its lease (a paused process, a cut
                # network) while our pop waited in Redis: the sweeper recorded it lost and its
                # outcome would be refused. Stop it; the new attempt owns the entry.
                self.interrupt(stale, "lost")
            running = self.running[task.id] = Running(task)
            running.job = asyncio.create_task(self._execute(running), name=f"task-{task.id}")

    async def _claim(self, ids: list[int], priority: int) -> list[ClaimedTask]:
        """Claim `ids` (popped at `priority`) in one statement; the result keeps their pop order
        (priority, then FIFO). With runners, only the types they do not run: ids of
        the others go back to where they were popped from, for the runners."""
        self._claiming += len(ids)
        try:
            return await self._claim_now(ids, priority)
        finally:
            self._claiming -= len(ids)

    async def _claim_now(self, ids: list[int], priority: int) -> list[ClaimedTask]:
        claimed, returned = await self.claims.claim(
            ids, self.worker_id, self.options.lease_seconds, self.sync_types
        )
        theirs = [task_id for task_id, _ in returned]  # the runners' types
        self._runners_ids_seen = bool(theirs)
        if not theirs:
            self._pop_backoff = 0.0
        else:
            with contextlib.suppress(*OUTAGE_ERRORS):  # else the sweeper pushes them
                await self.broker.push_oldest_first(theirs, priority)
            ids = [i for i in ids if i not in set(theirs)]
        if len(claimed) < len(ids):
            await self.fetcher.check_known(ids, [task.id for task in claimed])
        order = {task_id: position for position, task_id in enumerate(ids)}
        return sorted(claimed, key=lambda task: order[task.id])

    # ---- running -----------------------------------------------------------------------------

    async def _execute(self, running: Running) -> None:
        task = running.task
        self.board.begin(task.id, task.attempt)
        try:
            outcome = await self._run(task)
            self.tuner.executed()
            finish = outcomes.decide(outcome, task, self._task_class(task.task_type))
        except asyncio.CancelledError:
            reason = running.stop_reason
            if reason == "lost":
                log.warning("task %d was taken over after its lease expired; stopped", task.id)
                self._forget(running)
                return  # the finally below frees the slot
            finish = (
                outcomes.cancelled(task) if reason == "cancelled" else outcomes.handed_back(task)
            )
        except Exception as exc:
            # Not the task's own exception (those are its outcome): the worker's code around
            # it broke. The task fails with the reason rather than stay `running` for ever.
            log.exception("task %d: the worker could not run it", task.id)
            finish = outcomes.broken(exc)
        finally:
            running.ended = time.perf_counter()
            last_progress = self.board.end(task.id)
            self.executing -= 1
            self._slot_freed.set()
        if last_progress is not None:
            finish = dataclasses.replace(finish, progress=last_progress)
        try:
            await self._record(running, finish)
        except asyncio.CancelledError:
            # A shutdown past its grace period, while PostgreSQL does not answer (interrupt).
            log.warning(
                "task %d: stopped while its outcome (%s) was being recorded; if it was not, the "
                "task runs again once its lease lapses",
                task.id,
                finish.outcome.value,
            )
            raise
        finally:
            self._forget(running)
            self._slot_freed.set()

    def _forget(self, running: Running) -> None:
        """Drop `running`'s entry, unless a newer attempt of the same task owns it by now."""
        if self.running.get(running.task.id) is running:
            del self.running[running.task.id]

    async def _run(self, task: ClaimedTask) -> Outcome:
        task_type = self.registry.types.get(task.task_type)
        if task_type is None:
            return Outcome(
                error={**unknown_type_error(self.registry, task.task_type), "permanent": True}
            )
        if not task_type.is_async:  # claimed for the runners' types: never
            raise RuntimeError(f"a sync task ({task.task_type}) reached the event loop")
        job = Job.of(task, self.worker_id)
        reporter = JobReporter(job, functools.partial(self.board.report, task.id))
        try:
            if task.timeout_seconds is None:
                outcome = await self.instances.run_async(task_type, job, reporter)
            else:
                try:
                    async with asyncio.timeout(task.timeout_seconds):
                        outcome = await self.instances.run_async(task_type, job, reporter)
                except TimeoutError:
                    outcome = Outcome(error=outcomes.timeout_error(task.timeout_seconds))
        except BaseException:
            reporter.artifacts.discard()
            raise
        return reporter.settle(outcome)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _task_class(self, name: str) -> type | None:
        task_type = self.registry.types.get(name)
        return task_type.cls if task_type is not None else None

    async def _record(self, running: Running, finish: Finish) -> None:
        task = running.task
        recorded = await self.recorder.record(task, finish)
        handed_back = finish.outcome == AttemptOutcome.HANDED_BACK
        if recorded and handed_back:
            # Where it was popped from: it runs next, not behind the tasks queued after it.
            with contextlib.suppress(*OUTAGE_ERRORS):  # else the sweeper pushes it
                await self.broker.push_oldest_first([task.id], task.priority)
        ended = running.ended or time.perf_counter()
        log_attempt(task, finish, ended - running.started, recorded)

    def _recorded(self, items: Sequence[tuple[ClaimedTask, Finish]]) -> None:
        """Outcomes just committed: announce them, with how long each ran."""
        seconds = {}
        for task, _ in items:
            held = self.running.get(task.id)
            if held is not None and held.ended is not None:
                seconds[task.id] = held.ended - held.started
        self.announcer.recorded(items, seconds)

    def interrupt(self, running: Running, reason: StopReason) -> None:
        """Stop `running` for `reason` (once: the first reason is the one recorded). Once it has
        run, only a shutdown stops it recording its outcome: the fence refuses the outcome of a
        task that was lost, and a cancel that came after the end changes nothing."""
        if running.job is None or running.job.done() or running.stop_reason is not None:
            return
        if running.ended is not None and reason != "shutdown":
            return
        running.stop_reason = reason
        running.job.cancel()
