"""A runner: a child process of the worker that pops, claims, runs and records its own sync tasks.

Sync tasks run in processes so that a timeout or a cancellation can stop even CPU-bound code (the
supervisor kills the runner's process group), and so that each core runs Python of its own. Its
supervisor (the worker process, runners.py) forks it through the fork server with three file
descriptors, private ones (a task's print() or input() cannot touch them): a control pipe,
whose first line is the runner's `Config` in JSON; an event pipe, on which the runner sends JSON
lines (`{"foreign": [ids], "priority": p}` for popped ids of types it does not run,
`{"progress": id, "attempt": n, "value": {...}}` and `{"ended": id}` for a task's progress); and
its slot's memory (slot.py), which tells the supervisor what it runs and what it decided but has
not recorded yet.

The loop: pop up to a batch of ids (from the highest non-empty priority), claim the sync ones
under the runner's own worker id, pass the others to the supervisor unclaimed, run the claimed
tasks one by one, and record their outcomes in one statement per batch (or sooner, once the
oldest has waited RECORD_AFTER). A write goes out and the runner goes on: its answer is read
between the next tasks, or during the next pop (PostgreSQL's commit, a WAL flush, would
otherwise leave the core idle: fib(20) drains lost a fifth to it). Each claim is durable before
its task starts, and each outcome is fenced by the runner's worker id and the attempt, as the
worker's own are (sql/claims.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from taskq_core import logs
from taskq_core.plugins import Registry
from taskq_core.records import ClaimedTask, Finish, TaskStatus, runner_id
from taskq_core.worker import outcomes
from taskq_core.worker.announcer import Announcer
from taskq_core.worker.execution import Instances, Job, Outcome, unknown_type_error
from taskq_core.worker.fetching import Fetcher, give_back
from taskq_core.worker.holding import BACKOFF_MAX, BACKOFF_START, OUTAGE_ERRORS
from taskq_core.worker.progress import stamped
from taskq_core.worker.recorder import Recorder
from taskq_core.worker.reporting import JobReporter, log_attempt
from taskq_core.worker.slot import CLAIMED_MAX, Slot, entry

log = logging.getLogger("taskq.worker")

Done = tuple[ClaimedTask, Finish, float]  # a task, how it ended, and how long it ran

POP_WAIT = 1.0  # seconds a pop blocks: also how soon an idle runner sees a stop request
BATCH_MAX = CLAIMED_MAX  # ids per pop and claim: as many as a slot lists
# A claim takes about as many tasks as run in BATCH_SECONDS, as the runner has measured them: short
# tasks share each claim and each group commit, slow ones are not held back behind each other.
# PostgreSQL shares the cores: 0.02 s (with RECORD_AFTER 0.01) cost fib(20) drains 10-20% in
# statements. While the queue is deep an outcome waits up to this long to be written, as with
# the event loop's writes (tuner.LINGER_MAX).
BATCH_SECONDS = 0.05
# A batch that has run for longer than this (a task much slower than the ones before it) hands
# back the tasks it has not started, for any runner to take.
HOARD_SECONDS = 4 * BATCH_SECONDS
RECORD_AFTER = 0.05  # seconds an outcome may wait for the rest of its batch before it is written
# After a pop that brought only ids of types the runner does not run, while its supervisor has no
# room for them (it gives them back), the runner pauses this long, and longer each time up to
# POP_WAIT, so as not to pop the same ids again at once.
FOREIGN_BACKOFF = 0.05
WATCH_INTERVAL = 0.1  # seconds between the runner's liveness stamps and looks for a stop request
TASK_TIME_WEIGHT = 0.2  # of each new measurement in the running average of a task's time
IDLE_TITLE = "taskq-runner [idle]"


@dataclasses.dataclass(frozen=True)
class Config:
    """What a runner is told on its control pipe (JSON, one line)."""

    supervisor_id: str  # its worker's id; it claims under its own, records.runner_id
    database_url: str
    redis_url: str
    queue: str
    lease_seconds: float
    prepare: bool
    sync_types: list[str]

    def line(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode() + b"\n"

    def worker_id(self, pid: int) -> str:
        """The worker id the runner of process `pid` claims under."""
        return runner_id(self.supervisor_id, pid)

    @property
    def supervisor_stale(self) -> float:
        """Seconds after the supervisor's last sign of life when the runner stops claiming: it
        renews the leases, so past this the runner's tasks could be recovered and run again."""
        return self.lease_seconds / 3

    @property
    def stuck_after(self) -> float:
        """Seconds a runner may go without a sign of life between tasks before its supervisor
        takes it as stuck and replaces it: its claims' leases are renewed all the while, so
        they would be held for good. A lease's length, far beyond a loaded machine's pauses."""
        return self.lease_seconds


def serve(registry: Registry, control: int, events: int, slot_fd: int) -> None:
    """Read the config, then claim and run until asked to stop (or the supervisor is gone)."""
    with os.fdopen(control, "rb") as pipe:
        line = pipe.readline()
    if not line:  # no config (the worker writes it before the fork): nothing to run
        return
    config = Config(**json.loads(line))
    slot = Slot(slot_fd)
    asyncio.run(RunnerLoop(registry, config, slot, events).run())


class RunnerLoop:
    """One runner's loop."""

    def __init__(self, registry: Registry, config: Config, slot: Slot, events: int) -> None:
        self.registry = registry
        self.config = config
        self.worker_id = config.worker_id(os.getpid())
        self.slot = slot
        self._events = events
        self._sending = threading.Lock()  # progress is also sent from a timer thread
        self.instances = Instances()
        self.batch = 1  # tasks per claim, until the task time is known: tasks may be long
        self.pop_count = 1  # ids per pop: more while they are of its supervisor's types
        self._sync_types = frozenset(config.sync_types)
        self._task_seconds: float | None = None
        self._latest: dict[int, tuple[dict[str, Any], float]] = {}  # progress of the running task
        self._writing: asyncio.Task[None] | None = None  # the outcome write in flight
        self._write_failed: BaseException | None = None
        self._unwritten: list[Done] = []  # outcomes kept, not yet in a write
        self._unwritten_mark = 0  # where they end in the slot's buffer
        self._unwritten_since: float | None = None  # when the oldest of them was kept
        self.run_started = 0  # when the last task run began, as its slot says (monotonic ns)

    async def run(self) -> None:
        config = self.config
        self.fetcher = Fetcher(
            database_url=config.database_url,
            redis_url=config.redis_url,
            queue=config.queue,
            prepare=config.prepare,
            stopping=asyncio.Event(),  # a runner's stop request is in its slot: see _watch
        )
        self.claims, self.broker = self.fetcher.claims, self.fetcher.broker
        self.announcer = Announcer(self.broker)
        self.recorder = Recorder(self.claims, self.worker_id, OUTAGE_ERRORS)
        logs.set_title(IDLE_TITLE)
        watching = asyncio.create_task(self._watch())
        # Connected while the first pop waits (an outage here is met again at the first claim).
        opening = asyncio.create_task(self.claims.open())
        opening.add_done_callback(_ignore_outage)
        try:
            await self._loop()
            await self._write_all()
        finally:
            watching.cancel()
            await self.announcer.flush()
            await self.fetcher.close()

    async def _loop(self) -> None:
        foreign_backoff = 0.0
        paused = logs.Outage(log, "the worker process (its runners claim nothing)", BACKOFF_MAX)
        while not self.slot.stopping():
            if self._supervisor_stale():
                paused.failed(TimeoutError("it has not said it is alive"), BACKOFF_START)
                await asyncio.sleep(BACKOFF_START)
                continue
            paused.recovered()
            if self.fetcher.unsure and not await self._give_back_unknown():
                continue
            # Looking for work, until what it found is claimed and the rest passed on: its
            # supervisor pops for itself only while no runner does (runners.may_pop).
            self.slot.looking(True)
            popped = await self.fetcher.pop(max(self.batch, self.pop_count), POP_WAIT)
            if not popped or not popped[1]:
                continue
            priority, ids = popped
            # A stop request or a stalled supervisor while the pop waited: take nothing.
            if self.slot.stopping() or self._supervisor_stale():
                self.slot.looking(False)
                with contextlib.suppress(*OUTAGE_ERRORS):  # else the sweeper pushes them
                    await self.broker.push_oldest_first(ids, priority)
                continue
            split = await self.fetcher.claim(priority, ids, self._claim)
            if split is None:
                self.slot.looking(False)
                continue
            claimed, returned = split
            foreign = [task_id for task_id, kind in returned if kind not in self._sync_types]
            if len(foreign) < len(returned):  # more of its own than it runs soon: for others
                mine = [task_id for task_id, kind in returned if kind in self._sync_types]
                with contextlib.suppress(*OUTAGE_ERRORS):  # else the sweeper pushes them
                    await self.broker.push_oldest_first(mine, priority)
            room = self.slot.room()  # before the ids below take some of it
            if foreign:
                self._send({"foreign": foreign, "priority": priority})
            self.slot.looking(False)  # after the message: its supervisor reads it first
            if len(claimed) + len(returned) < len(ids):
                accounted = [*(task_id for task_id, _ in returned), *(t.id for t in claimed)]
                await self.fetcher.check_known(ids, accounted)
            if foreign and not claimed:
                if room > len(foreign):
                    # Ids of the supervisor's types are what the queue holds: pop more at once
                    # (its own it still claims `batch` at most).
                    self.pop_count = min(BATCH_MAX, 2 * self.pop_count)
                    foreign_backoff = 0.0
                else:
                    foreign_backoff = min(max(2 * foreign_backoff, FOREIGN_BACKOFF), POP_WAIT)
                    await asyncio.sleep(foreign_backoff)
                continue
            foreign_backoff = 0.0
            self.pop_count = self.batch
            if claimed:
                order = {task_id: position for position, task_id in enumerate(ids)}
                claimed.sort(key=lambda task: order[task.id])
                self.slot.claimed([task.id for task in claimed])
                await self._run_batch(claimed)
                logs.set_title(IDLE_TITLE)

    async def _watch(self) -> None:
        """Say the runner moves; and pass a stop request on to whatever waits out an outage."""
        while True:
            self.slot.beat()
            if self.slot.stopping():
                self.fetcher.stopping.set()
            await asyncio.sleep(WATCH_INTERVAL)

    async def _give_back_unknown(self) -> bool:
        """After a claim whose answer was lost: give back whatever is held under this runner's
        id, since between batches it holds nothing it knows of (its supervisor renews every
        lease under that id, so such claims would be held for good). False while PostgreSQL
        does not answer."""
        try:
            await self._write_all()  # the outcomes in flight first: those tasks are its own
            await self.fetcher.give_back_unknown(self.worker_id, ())
        except OUTAGE_ERRORS as exc:
            await self.fetcher.database_failed(exc)
            return False
        return True

    def _supervisor_stale(self) -> bool:
        return self.slot.supervisor_age() > self.config.supervisor_stale

    async def _claim(self, ids: list[int]) -> tuple[list[ClaimedTask], list[tuple[int, str]]]:
        config = self.config
        return await self.claims.claim(
            ids,
            self.worker_id,
            config.lease_seconds,
            config.sync_types,
            listed=True,
            limit=self.batch,
        )

    async def _run_batch(self, tasks: list[ClaimedTask]) -> None:
        """Run the claimed `tasks` in order, their outcomes written as they go; hand back what
        is left when asked to stop or when the batch has run too long."""
        self.announcer.announce([(task.id, TaskStatus.RUNNING.value) for task in tasks])
        batch_started = time.perf_counter()
        skipped: set[int] = set()
        last = len(tasks) - 1
        for position, task in enumerate(tasks):
            now = time.perf_counter()
            # Asked to stop, or the batch has run long, or the supervisor renews no lease: the
            # rest goes back for others (a lease that lapses would have it run twice).
            if (
                self.slot.stopping()
                or (position and now - batch_started > HOARD_SECONDS)
                or self._supervisor_stale()
            ):
                await self._write_all()
                await self._hand_back(tasks[position:])
                return
            skipped |= self.slot.skipped()
            if task.id in skipped:
                finish, seconds = outcomes.cancelled(task), 0.0
            else:
                finish, seconds = self._run_one(task, len(tasks) - position - 1)
            await self._keep((task, finish, seconds))
            self.slot.end()
            if task.id not in skipped and self.slot.revoked(self.run_started):
                break  # its supervisor handed back the rest while this one ran
            if position == last:
                break
            self._write_soon()
            if self._writing is not None:
                await asyncio.sleep(0)  # the statement goes out, or its answer comes in
        self._write_soon(at_once=True)  # its answer comes during the next pop and claim

    async def _keep(self, done: Done) -> None:
        """Keep an outcome, in the slot (for the worker, should this runner die) and for the
        next write."""
        task, finish, _ = done
        if not self.slot.add_outcome(entry(task, finish)):
            await self._write_all()  # the buffer is full: write what it holds first
            if not self.slot.add_outcome(entry(task, finish)):
                await self._write_now([done], None)  # too big for any buffer: now
                return
        self._unwritten.append(done)
        self._unwritten_mark = self.slot.mark()
        self._unwritten_since = self._unwritten_since or time.perf_counter()

    def _write_soon(self, *, at_once: bool = False) -> None:
        """Start writing the outcomes kept (one write in flight at a time: what ends meanwhile
        goes into the next), once the oldest has waited RECORD_AFTER, or `at_once`."""
        if self._write_failed is not None:
            raise self._write_failed
        since = self._unwritten_since
        if self._writing is not None or since is None:
            return
        if not at_once and time.perf_counter() - since < RECORD_AFTER:
            return
        done, mark = self._unwritten, self._unwritten_mark
        self._unwritten, self._unwritten_since = [], None
        self._writing = asyncio.create_task(self._write_now(done, mark))
        self._writing.add_done_callback(self._written)

    def _written(self, write: asyncio.Task[None]) -> None:
        self._writing = None
        if not write.cancelled() and write.exception() is not None:
            # Not an outage (those are waited out): a bug. The runner must die, its outcomes
            # still in the slot for the worker to record.
            self._write_failed = write.exception()
            return
        # What ended while it was in flight goes next, once due, even if the runner now waits
        # for ids (writing it at once would make many small writes, each a statement).
        since = self._unwritten_since
        if since is not None:
            due_in = RECORD_AFTER - (time.perf_counter() - since)
            asyncio.get_running_loop().call_later(max(0.0, due_in), self._write_due)

    def _write_due(self) -> None:
        if self._write_failed is None:
            self._write_soon(at_once=True)

    async def _write_all(self) -> None:
        """Write every outcome kept, and wait until they are."""
        while self._writing is not None or self._unwritten:
            if self._writing is None:
                self._write_soon(at_once=True)
            if self._writing is not None:
                await asyncio.wait([self._writing])
            if self._write_failed is not None:
                raise self._write_failed

    def _run_one(self, task: ClaimedTask, waiting: int) -> tuple[Finish, float]:
        """Run `task` here, its slot saying so (and that `waiting` claimed tasks wait behind it);
        its finish and how long it ran."""
        logs.set_title(f"taskq-runner [task {task.id} {task.task_type}]")
        self.run_started = self.slot.begin(task.id, task.attempt, task.timeout_seconds, waiting)
        started = time.perf_counter()
        job = Job.of(task, self.worker_id)
        outcome = run_job(self.registry, self.instances, job, self._progress_sender(task))
        seconds = time.perf_counter() - started
        self._observe(seconds)
        task_type = self.registry.types.get(task.task_type)
        finish = outcomes.decide(outcome, task, task_type.cls if task_type else None)
        latest = self._latest.pop(task.id, None)
        if latest is not None:
            finish = dataclasses.replace(finish, progress=stamped(*latest))
            self._send({"ended": task.id})
        return finish, seconds

    def _progress_sender(self, task: ClaimedTask) -> Any:
        def send(value: dict[str, Any]) -> None:
            self._latest[task.id] = (value, time.time())
            self._send({"progress": task.id, "attempt": task.attempt, "value": value})

        return send

    def _observe(self, seconds: float) -> None:
        """Fold one task's time into the average; size the next pops to it."""
        average = self._task_seconds
        average = seconds if average is None else average + TASK_TIME_WEIGHT * (seconds - average)
        self._task_seconds = average
        fits = int(BATCH_SECONDS / average) if average > 0 else BATCH_MAX
        self.batch = max(1, min(BATCH_MAX, fits))

    async def _write_now(self, done: list[Done], mark: int | None) -> None:
        """Write the outcomes in `done`, then say so; the slot's buffer holds them, before
        `mark` (None: not there), until then."""
        items = [(task, finish) for task, finish, _ in done]
        recorded = await self.recorder.write(items)
        if mark is not None:
            self.slot.recorded(mark)
        self.announcer.recorded(
            [item for item in items if item[0].id in recorded],
            {task.id: seconds for task, _, seconds in done},
        )
        for task, finish, seconds in done:
            log_attempt(task, finish, seconds, task.id in recorded)

    async def _hand_back(self, tasks: list[ClaimedTask]) -> None:
        """Give back claimed tasks that never started: to the popping end, as they were."""
        ids = [task.id for task in tasks]
        given = await give_back(self.claims, self.broker, self.worker_id, ids)
        log.info("gave back %d claimed task(s) it had not started", given)

    def _send(self, message: dict[str, Any]) -> None:
        data = memoryview(json.dumps(message).encode() + b"\n")
        with self._sending:
            while data:
                data = data[os.write(self._events, data) :]


def _ignore_outage(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an outage is met again, and said, where it matters


def run_job(
    registry: Registry,
    instances: Instances,
    job: Job,
    send_progress: Callable[[dict[str, Any]], None],
) -> Outcome:
    """Run `job` here, as a runner does: its input validated, the task's own code."""
    task_type = registry.types.get(job.task_type)
    if task_type is None:
        return Outcome(error=unknown_type_error(registry, job.task_type))
    if task_type.is_async:
        message = f"{job.task_type} is async: it runs in the worker's event loop, not in a runner"
        return Outcome(error={"type": "RunnerError", "message": message, "traceback": ""})
    reporter = JobReporter(job, send_progress, threaded=True)
    try:
        outcome = instances.run_sync(task_type, job, reporter)
    finally:
        reporter.end()
    return reporter.settle(outcome)
