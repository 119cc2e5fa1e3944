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

from taskq_core import broker as broker_module
from taskq_core import logs
from taskq_core.broker import Broker
from taskq_core.db import urls
from taskq_core.plugins import Registry
from taskq_core.records import AttemptOutcome, ClaimedTask, Finish, TaskStatus
from taskq_core.redaction import redact_url
from taskq_core.worker import beats, outcomes
from taskq_core.worker.announcer import Announcer
from taskq_core.worker.artifact_gc import ArtifactCollector
from taskq_core.worker.execution import Instances, Job, Outcome, unknown_type_error
from taskq_core.worker.holding import (
    BACKOFF_MAX,
    BACKOFF_START,
    OUTAGE_ERRORS,
    Running,
    StopReason,
    WorkerOptions,
    new_worker_id,
)
from taskq_core.worker.pool import RunnerPool
from taskq_core.worker.progress import ProgressBoard
from taskq_core.worker.recorder import Recorder
from taskq_core.worker.reporting import JobReporter, discard_attempt, store_url
from taskq_core.worker.retention import purge_expired
from taskq_core.worker.scheduler import Scheduler
from taskq_core.worker.sql import Claims, Sweeps
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

UNKNOWN_IDS_EVERY = 60.0  # seconds between warnings about popped ids without a row

# Errors of a sync job whose runner was killed (timeout, crash, cancellation) before it replied.
KILLED_RUNNER_ERRORS = frozenset({"TaskTimeoutError", "RunnerCrashedError", "RunnerError"})


class Worker:
    """One worker process. Async task types run in its event loop; sync ones in runner processes
    (so a timeout or a cancellation can stop even CPU-bound code, by killing the runner)."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        registry: Registry,
        options: WorkerOptions | None = None,
        worker_id: str | None = None,
        pool: RunnerPool,
    ) -> None:
        """`pool`: the runners for sync task types, not started yet (perhaps being prepared);
        the worker starts it if a sync type is installed, and closes it."""
        self.database_url = database_url
        self.redis_url = redis_url
        self.registry = registry
        self.options = options or WorkerOptions()
        self.worker_id = worker_id or new_worker_id()
        self.pool = pool
        self.instances = Instances()
        self.running: dict[int, Running] = {}
        self.stopping = asyncio.Event()  # set once asked to stop: take nothing new
        self.failed = False  # a background loop died; the process should exit non-zero
        self._slot_freed = asyncio.Event()
        # Tasks executing now. The slot frees as soon as a task ends, before its outcome is
        # written, so the next claim overlaps the group commit; `running` keeps the task (and
        # its lease renewed) until the outcome is durable.
        self.executing = 0
        self._chores: set[asyncio.Task[None]] = set()  # best-effort clean-ups in threads
        self.tuner = Tuner.for_worker(self.options.concurrency, pool.size)
        self._unknown_ids = 0  # popped ids without a row, not yet logged
        self._unknown_said_at = float("-inf")

    def stop(self) -> None:
        """Take nothing new; running tasks get `grace_seconds` to finish, then are handed back."""
        self.stopping.set()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        opts = self.options
        redis = broker_module.connect(self.redis_url)
        popper = broker_module.connect(self.redis_url, blocking=True)
        conninfo = urls.conninfo(self.database_url)
        self.claims = Claims(conninfo, opts.queue, prepare=opts.prepare)
        self.sweeps = Sweeps(conninfo, opts.queue, prepare=opts.prepare)
        self.broker = Broker(redis, opts.queue)
        self.announcer = Announcer(self.broker)
        self.popper = Broker(popper, opts.queue)
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
        self.pool.on_progress = self.board.report
        background: list[asyncio.Task[None]] = []
        try:
            if self.registry.has_sync:
                await self.pool.start()
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
                asyncio.create_task(self.tuner.run(self._job_seconds), name="tuner"),
            ]
            for task in background:
                task.add_done_callback(self._background_ended)
            bounds = self.tuner.bounds
            log.info(
                "worker %s started: concurrency %d (adapting within %d-%d), "
                "%d runner process(es), task types: %s",
                self.worker_id,
                self.tuner.limit,
                bounds.floor,
                bounds.ceiling,
                self.pool.size if self.registry.has_sync else 0,
                self.registry.known_names(),
            )
            await self._fetch_loop()
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(*OUTAGE_ERRORS):
                await self.sweeps.worker_stopped(self.worker_id)
            await self.pool.close()
            await self.claims.close()
            with contextlib.suppress(*OUTAGE_ERRORS):
                await self.board.flush()  # the last reports of the tasks that just ended
            await self.progress_writes.close()
            await self.artifact_deletions.close()
            await self.announcer.flush()
            await popper.aclose()
            await redis.aclose()
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

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period, then hand back the rest."""
        jobs = [r.job for r in self.running.values() if r.job is not None]
        if not jobs:
            return
        log.info(
            "worker %s stopping: %d task(s) running, %.0fs to finish",
            self.worker_id,
            len(jobs),
            self.options.grace_seconds,
        )
        _, late = await asyncio.wait(jobs, timeout=self.options.grace_seconds)
        for running in list(self.running.values()):
            if running.job in late:
                self.interrupt(running, "shutdown")
        if late:
            await asyncio.wait(late)

    # ---- fetching ----------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        backoff = BACKOFF_START
        # Redis (popping) and PostgreSQL (claiming) fail apart: a pop that works says nothing of
        # the database, so each has its own outage, declared over only by its own success.
        pop_outage = logs.Outage(
            log, f"Redis at {redact_url(self.redis_url)} (taking task ids)", BACKOFF_MAX
        )
        claim_outage = logs.Outage(
            log, f"PostgreSQL at {redact_url(self.database_url)} (claiming tasks)", BACKOFF_MAX
        )
        deep = False  # the last pop got all it asked for: more are waiting
        lingering_since: float | None = None
        while not self.stopping.is_set():
            self._slot_freed.clear()
            limit = self.tuner.limit
            refill = max(1, limit // REFILL_FRACTION)
            # Executing tasks are capped at `concurrency`, and so are outcomes waiting for the
            # group commit: if PostgreSQL falls behind, the worker claims less.
            free = min(limit - self.executing, 2 * limit - len(self.running))
            wait = POP_TIMEOUT if free <= 0 else 0.0
            if deep and 0 < free < refill:
                now = time.monotonic()
                lingering_since = lingering_since or now
                wait = lingering_since + self.tuner.linger - now
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), wait)
                continue
            lingering_since = None
            if claim_outage.since is not None:
                # The last ids popped could not be claimed: take none until the database answers
                # (a worker given a wrong database must not keep taking ids others could run).
                try:
                    await self.claims.ping()
                except OUTAGE_ERRORS as exc:
                    claim_outage.failed(exc, backoff)
                    backoff = await self._back_off(backoff)
                    continue
                claim_outage.recovered()
            try:
                # As many ids as there are free slots: one when idle, many when the queue is deep.
                priority, ids = await self.popper.pop_many(free, POP_TIMEOUT)
            except OUTAGE_ERRORS as exc:
                pop_outage.failed(exc, backoff)
                backoff = await self._back_off(backoff)
                continue
            pop_outage.recovered()
            deep = len(ids) == free
            self.tuner.popped(free, len(ids))
            # Between the pop and the claim the ids exist only here: a crash now loses the push,
            # and the sweeper's lost-dispatch repair pushes them again.
            try:
                claimed = await self._claim(ids) if ids else []
            except OUTAGE_ERRORS as exc:
                claim_outage.failed(exc, backoff)
                await self._push_back(priority, ids)
                backoff = await self._back_off(backoff)
                continue
            except Exception:
                await self._push_back(priority, ids)  # not an outage: a database without taskq?
                raise
            if ids:
                claim_outage.recovered()
            backoff = BACKOFF_START
            for task in claimed:
                self.executing += 1
                stale = self.running.get(task.id)
                if stale is not None:
                    # Our own earlier attempt, stalled past its lease (a paused process, a cut
                    # network) while our pop waited in Redis: the sweeper recorded it lost and
                    # its outcome would be refused. Stop it; the new attempt owns the entry.
                    self.interrupt(stale, "lost")
                running = self.running[task.id] = Running(task)
                running.job = asyncio.create_task(self._execute(running), name=f"task-{task.id}")
            if claimed:
                # The tasks start first: a turn of the loop for each to reach the pool, which
                # writes a job to an idle runner at once. The announcement and the next pop each
                # cost a write to Redis (a wake-up of another process, slow on a virtual machine)
                # that would otherwise come before a task's start.
                await asyncio.sleep(0)
                self.announcer.announce([(task.id, TaskStatus.RUNNING.value) for task in claimed])

    async def _back_off(self, backoff: float) -> float:
        """Wait `backoff` seconds (less if asked to stop); the next, longer back-off."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), backoff)
        return min(backoff * 2, BACKOFF_MAX)

    async def _push_back(self, priority: int, ids: list[int]) -> None:
        """Return popped ids the worker could not claim to where they were popped from, so
        they run next, elsewhere or here once the database answers."""
        try:
            await self.broker.push_oldest_first(ids, priority)
        except OUTAGE_ERRORS as exc:
            # Pending in PostgreSQL but in no list: the sweeper's lost-dispatch repair pushes
            # them again.
            log.warning(
                "%d popped task id(s) could not be claimed nor pushed back (%s); "
                "the sweeper pushes them again",
                len(ids),
                type(exc).__name__,
            )
            return
        log.warning(
            "%d popped task id(s) could not be claimed: pushed back to Redis (priority %d)",
            len(ids),
            priority,
        )

    async def _claim(self, ids: list[int]) -> list[ClaimedTask]:
        """Claim `ids` in one statement; the result keeps their pop order (priority, then FIFO)."""
        claimed = await self.claims.claim(ids, self.worker_id, self.options.lease_seconds)
        if len(claimed) < len(ids):
            log.debug(
                "%d of %d popped ids were not pending or not due", len(ids) - len(claimed), len(ids)
            )
            await self._check_known(ids, {task.id for task in claimed})
        order = {task_id: position for position, task_id in enumerate(ids)}
        return sorted(claimed, key=lambda task: order[task.id])

    async def _check_known(self, ids: list[int], claimed: set[int]) -> None:
        """Say so, at most once a minute, when popped ids have no row here: tasks deleted while
        their id waited (rare: a finished task's id is long popped when retention deletes it),
        or this worker is given another database than the API's. They are not pushed back (a
        deleted task's id would go round for ever); the sweeper of a worker on the right
        database finds those tasks missing from Redis and pushes them again."""
        try:
            unknown = await self.claims.unknown([i for i in ids if i not in claimed])
        except OUTAGE_ERRORS:
            return  # only a diagnosis: the claim itself went through
        if not unknown:
            return
        self._unknown_ids += unknown
        now = time.monotonic()
        if now - self._unknown_said_at < UNKNOWN_IDS_EVERY:
            return
        log.warning(
            "%d popped task id(s) have no row in PostgreSQL at %s: deleted since, or this is "
            "not the database they were enqueued in; left to the sweeper of a worker that has "
            "them",
            self._unknown_ids,
            redact_url(self.database_url),
        )
        self._unknown_ids, self._unknown_said_at = 0, now

    # ---- running -----------------------------------------------------------------------------

    async def _execute(self, running: Running) -> None:
        task = running.task
        self.board.begin(task.id, task.attempt)
        try:
            outcome = await self._run(task)
            self.tuner.executed(time.perf_counter() - running.started, self._is_sync(task))
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
        job = Job.of(task, self.worker_id)
        if not task_type.is_async:
            try:
                outcome = await self.pool.run(job, task.timeout_seconds)
            except asyncio.CancelledError:
                self._background(asyncio.to_thread(discard_attempt, job))
                raise
            if outcome.error is not None and outcome.error.get("type") in KILLED_RUNNER_ERRORS:
                # The runner was killed mid-job: whatever it was writing is thrown away here.
                self._background(asyncio.to_thread(discard_attempt, job))
            return outcome
        reporter = JobReporter(job, functools.partial(self.board.report, task.id))
        try:
            if task.timeout_seconds is None:
                outcome = await self.instances.run_async(task_type, job, reporter)
            else:
                try:
                    async with asyncio.timeout(task.timeout_seconds):
                        outcome = await self.instances.run_async(task_type, job, reporter)
                except TimeoutError:
                    outcome = Outcome(error=timeout_error(task.timeout_seconds))
        except BaseException:
            reporter.artifacts.discard()
            raise
        return reporter.settle(outcome)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _is_sync(self, task: ClaimedTask) -> bool:
        task_type = self.registry.types.get(task.task_type)
        return task_type is not None and not task_type.is_async

    def _job_seconds(self) -> float | None:
        return self.pool.job_seconds

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
        elapsed_ms = ((running.ended or time.perf_counter()) - running.started) * 1000
        detail = ""
        if finish.error is not None:
            detail = f": {finish.error['type']}: {finish.error['message']}"
        if finish.status == TaskStatus.PENDING and not handed_back:
            detail += f" (retry in {finish.retry_in:.1f}s)"
        if not recorded:
            detail += " (not recorded: the task was no longer this worker's)"
        # One line per attempt; its fields are also in JSON logs (TASKQ_LOG_FORMAT=json).
        log.info(
            "task %d %s %s in %.1f ms (attempt %d/%d)%s",
            task.id,
            task.task_type,
            finish.outcome,
            elapsed_ms,
            task.attempt,
            task.max_attempts,
            detail,
            extra={
                "task_id": task.id,
                "task_type": task.task_type,
                "attempt": task.attempt,
                "max_attempts": task.max_attempts,
                "duration_ms": round(elapsed_ms, 3),
                "outcome": finish.outcome.value,
                "status": finish.status.value,
                "recorded": recorded,
            },
        )

    def _recorded(self, items: Sequence[tuple[ClaimedTask, Finish]]) -> None:
        """Outcomes just committed: announce them, with how long each ran."""
        self.announcer.recorded(items, self.running)

    def interrupt(self, running: Running, reason: StopReason) -> None:
        """Stop `running` for `reason` (once: the first reason is the one recorded)."""
        if running.job is not None and not running.job.done() and running.stop_reason is None:
            running.stop_reason = reason
            running.job.cancel()


def timeout_error(seconds: float | None) -> dict[str, str]:
    return {
        "type": outcomes.TIMEOUT_ERROR,
        "message": f"task exceeded its timeout of {seconds:g}s and was stopped",
        "traceback": "",
    }
