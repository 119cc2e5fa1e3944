"""The worker's runners: processes that pop, claim, run and record their own sync tasks
(runner.py), supervised from the worker's event loop.

The supervisor does nothing per task. It renews the leases of everything its runners hold (one
statement, keyed on their worker ids), stamps each slot so its runner knows it is alive, and
every WATCH_INTERVAL reads the slots: a task past its deadline is stopped, a runner stuck between
tasks (its own liveness stamp stale) is replaced. To stop a runner's task (a timeout, a
cancellation, a lease lost, a shutdown past its grace) it freezes the runner, reads its slot again
(a read taken while it moved on must not stop the next task), then kills it, or lets it go on.
A runner that dies, by itself or killed, is settled from its slot and the database: the outcomes
it decided and had not recorded are recorded; the task it was running ends as the stop's reason
says (or as a crash); what it held and never started is given back, to the popping end of its
list. Then a new runner takes its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from taskq_core.broker import Broker
from taskq_core.plugins import Registry
from taskq_core.processes import alive, stat_fields
from taskq_core.records import AttemptOutcome, ClaimedTask, Finish
from taskq_core.worker import outcomes, slot
from taskq_core.worker.announcer import Announcer
from taskq_core.worker.execution import Job, Outcome
from taskq_core.worker.fetching import give_back, through_outages
from taskq_core.worker.forkserver import (
    FORK_TIMEOUT,
    Answer,
    Ends,
    Exited,
    Forker,
    ForkServer,
    RunnerError,
    exit_description,
)
from taskq_core.worker.holding import OUTAGE_ERRORS
from taskq_core.worker.progress import ProgressBoard
from taskq_core.worker.recorder import Recorder
from taskq_core.worker.reporting import discard_attempt, log_attempt
from taskq_core.worker.runner import Config
from taskq_core.worker.slot import Running, Slot
from taskq_core.worker.sql import Claims

log = logging.getLogger("taskq.worker")

WATCH_INTERVAL = 0.05  # seconds between reads of the slots (timeouts) and liveness stamps
# A task that has run this long while claimed tasks wait behind it in its runner: they are handed
# back (revoked), for an idle runner or another worker to take.
REVOKE_AFTER = 0.1
FREEZE_WAIT = 0.1  # seconds a frozen runner may take to stop before it is killed regardless
GONE_POLL = 0.005  # seconds between looks whether a killed runner is gone
RESTART_DELAY = 1.0  # seconds between attempts to replace a runner that would not start
# How long a stopping worker waits to settle its dead runners (recording what they ran, giving
# back what they held) while the database does not answer; after that their leases lapse.
SETTLE_ON_STOP = 5.0
# When to look again (seconds after the settle, then after that) for claims a dead runner's
# last statement made after it died; its worker id stays renewed until then.
LATE_CLAIM_CHECKS = (0.5, 2.0)

READ_SIZE = 64 * 1024  # bytes per read of a pipe: its default capacity

StopReason = Literal["timeout", "cancelled", "lost", "shutdown", "stuck"]
Foreign = Callable[[int, list[int]], None]  # (priority, ids) popped for the supervisor to run


class Lines:
    """Cuts a byte stream read in chunks into lines; a long line is copied once, not per chunk."""

    __slots__ = ("partial",)

    def __init__(self) -> None:
        self.partial = bytearray()  # the start of a line whose end has not come yet

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes, without their newlines."""
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if lines and self.partial:
            self.partial += lines[0]
            lines[0] = bytes(self.partial)
            self.partial.clear()
        self.partial += rest
        return lines


class Runner:
    """The supervisor's end of one runner."""

    def __init__(self, pid: int, exited: Exited, events: int, slot: Slot, config: Config) -> None:
        self.pid = pid
        self.exited = exited  # its exit status; never await it bare: cancelling would cancel it
        self.events = events
        self.slot = slot
        self.worker_id = config.worker_id(pid)
        self.stuck_after = config.stuck_after  # seconds still between tasks: it is stuck
        self.lines = Lines()
        self.alive = True  # False once it is known dead or killed
        self.settled = False  # its settling has run: it is done with for good
        self.stop_reason: StopReason | None = None  # why its running task was stopped
        self.held: set[int] = set()  # what it held at the last renewal
        self.revoked: Running | None = None  # the last task whose waiting ones were taken back
        self.missing: Running | None = None  # the task a renewal did not find it holding

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    def kill(self) -> None:
        """SIGKILL its process group: the runner and any subprocess its task started. Also when
        its exit is settled as unknown (its fork server died first): then it may still run, for
        the moment until the parent-death signal reaches it."""
        self.alive = False
        if not self.exited.done() or self.exited.result() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)


class Runners:
    """`size` runners, each replaced when it dies, until `stop`."""

    def __init__(self, size: int, config: Config, *, env: Mapping[str, str] | None = None) -> None:
        """`config`: what every runner is told; `env`: the runners' environment."""
        if size < 1:
            raise ValueError(f"a worker needs at least one runner, not {size}")
        self._size = size
        self._config = config
        self._forker = Forker(env, self._fork_server_lost)
        self._live: list[Runner] = []
        self._settling: dict[Runner, asyncio.Task[None]] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._taking_back: set[asyncio.Task[None]] = set()  # awaited on stop, never cancelled
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def pids(self) -> list[int]:
        return sorted(r.pid for r in [*self._live, *self._settling])

    @property
    def worker_ids(self) -> list[str]:
        """The worker ids whose leases to renew: every runner not yet settled."""
        return [r.worker_id for r in [*self._live, *self._settling]]

    @property
    def held(self) -> list[int]:
        """The tasks the runners held at the last renewal."""
        return [task_id for r in self._live for task_id in r.held]

    def may_pop(self) -> bool:
        """Whether the supervisor may pop ids for its own (async) types: only while every
        runner runs a task. Else a runner pops, and passes those ids on in queue order (two
        poppers at once would each take ids out of turn)."""
        return all(not r.slot.is_looking() and r.slot.running() for r in self._live)

    def read_events(self) -> None:
        """Act on what the runners have sent: ids passed on first of all (a runner that stopped
        looking for work has written them by then)."""
        for runner in list(self._live):
            self._on_events(runner)

    @property
    def busy(self) -> int:
        """How many runners run a task now."""
        return sum(1 for r in self._live if r.slot.running() is not None)

    @property
    def holding(self) -> int:
        """How many tasks the runners hold now: running, or claimed and waiting behind one."""
        return sum(1 + running.waiting for r in self._live if (running := r.slot.running()))

    def fork_early(self, registry: Registry) -> None:
        """Fork the fork server and the runners now, from this process before it runs an event
        loop, a thread or a connection (forkserver.fork_early); `start` adopts them. If it
        cannot, `start` spawns a fork server instead."""
        runners = [Ends(self._config) for _ in range(self._size)]
        if not self._forker.fork_early(registry, runners):
            for ends in runners:
                ends.close()

    async def start(
        self,
        *,
        registry: Registry,
        claims: Claims,
        broker: Broker,
        announcer: Announcer,
        board: ProgressBoard,
        on_foreign: Foreign,
        room: Callable[[], int],
    ) -> None:
        """Fork the runners, or adopt those `fork_early` forked (RunnerError if the fork server
        cannot load the plugins); `room()`: how many more ids of the other types the
        supervisor can take."""
        self._registry = registry
        self._claims = claims
        self._broker = broker
        self._announcer = announcer
        self._board = board
        self._on_foreign = on_foreign
        self._room = room
        try:
            zygote = await self._forker.server()
            early = self._forker.take_early()
            started = await asyncio.gather(
                *(self._adopt(zygote, ends, answer) for ends, answer in early),
                *(self._spawn() for _ in range(self._size - len(early))),
            )
        except BaseException:
            await self.stop(0)
            raise
        self._live.extend(r for r in started if r.alive)
        self._watch = asyncio.create_task(self._watch_slots(), name="runner-slots")

    async def close(self, grace: float = 0) -> None:
        """`stop`, unless it has run."""
        if not self._stopping:
            await self.stop(grace)

    async def stop(self, grace: float) -> None:
        """Ask every runner to stop (finish its task, record, hand back the rest); after `grace`
        seconds, stop the tasks still running and hand them back. Then the fork server stops."""
        self._stopping = True
        self._forker.drop_early()
        for task in self._restarts:
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        runners = list(self._live)
        for runner in runners:
            runner.slot.stop()
        if runners:
            await asyncio.wait([r.exited for r in runners], timeout=grace)
        for runner in runners:
            if runner.alive and not runner.exited.done():
                runner.stop_reason = "shutdown"
                self._died(runner)
        # Take-backs and settles give back claims that never started: cut short, those tasks
        # would wait for their leases to lapse and lose an attempt. Bounded, for a database
        # that does not answer.
        pending = [*self._taking_back, *self._settling.values()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=SETTLE_ON_STOP)
            for settle in late:
                settle.cancel()
            if late:
                log.warning(
                    "could not give back or settle what %d runner(s) held within %gs: those "
                    "tasks run again once their leases lapse",
                    len(late),
                    SETTLE_ON_STOP,
                )
            await asyncio.gather(*late, return_exceptions=True)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self._forker.stop()

    def renewed(self, rows: Sequence[tuple[int, str, bool]], asked_at: int) -> None:
        """Act on a renewal of the runners' leases sent at `asked_at` (monotonic ns): a task
        cancelled is stopped, a runner whose running task is no longer its own is stopped."""
        held: dict[str, set[int]] = {}
        for task_id, worker_id, cancel in rows:
            held.setdefault(worker_id, set()).add(task_id)
            if cancel:
                self.cancel(task_id)
        for runner in list(self._live):
            runner.held = held.get(runner.worker_id, set())
            running = runner.slot.running()
            # A task started after the renewal was sent may be missing from it by rights, and
            # a row being written just then is skipped: only twice missing is it lost.
            if running is None or running.started >= asked_at or running.task_id in runner.held:
                runner.missing = None
            elif runner.missing != running:
                runner.missing = running
            else:
                log.warning(
                    "task %d was taken over after its lease expired; stopping its runner",
                    running.task_id,
                )
                self._stop_task(runner, running, "lost")

    def cancel(self, task_id: int) -> None:
        """`task_id` was cancelled: stop it where it runs, skip it where it waits."""
        for runner in list(self._live):
            running = runner.slot.running()
            if running is not None and running.task_id == task_id:
                self._stop_task(runner, running, "cancelled")
            else:
                runner.slot.skip(task_id)

    # ---- watching ----------------------------------------------------------------------------

    async def _watch_slots(self) -> None:
        while True:
            now = time.monotonic_ns()
            room = self._room()
            for runner in list(self._live):
                runner.slot.alive()
                runner.slot.set_room(room)
                running = runner.slot.running()
                if running is None:
                    if runner.slot.runner_age() > runner.stuck_after:
                        self._stop_stuck(runner)
                    continue
                if running.deadline and now >= running.deadline:
                    self._stop_task(runner, running, "timeout")
                elif (
                    running.waiting
                    and now - running.started >= REVOKE_AFTER * 1e9
                    and running != runner.revoked
                ):
                    self._revoke(runner, running)
            await asyncio.sleep(WATCH_INTERVAL)

    def _revoke(self, runner: Runner, seen: Running) -> None:
        """Take back the claimed tasks waiting behind `seen`, which runs long, if it still runs."""
        if not self._freeze(runner, seen):
            return
        waiting = runner.slot.waiting(seen)
        runner.slot.revoke(seen)
        runner.revoked = seen
        self._thaw(runner)
        task = asyncio.create_task(self._take_back(runner, seen.task_id, waiting))
        self._taking_back.add(task)
        task.add_done_callback(self._taking_back.discard)

    async def _take_back(self, runner: Runner, running: int, waiting: list[int]) -> None:
        # The runner will not start them: it reads the revocation before its next task. Nor
        # can it claim them again before they are back in Redis, after this.
        given = await give_back(self._claims, self._broker, runner.worker_id, waiting)
        log.info("took back %d task(s) waiting behind task %d, which runs long", given, running)

    def _stop_task(self, runner: Runner, seen: Running, reason: StopReason) -> None:
        """Stop `seen`, the task `runner` ran when its slot was read, if it still runs it."""
        if self._freeze(runner, seen):
            runner.stop_reason = reason
            self._died(runner)

    def _stop_stuck(self, runner: Runner) -> None:
        """Kill `runner` if it is still stuck between tasks: its claims go back to the queue."""
        if not self._freeze(runner, None):
            return
        age = runner.slot.runner_age()
        if age <= runner.stuck_after:  # it moved on before it froze
            self._thaw(runner)
            return
        log.warning(
            "task runner %d has not moved for %.0fs between tasks; replacing it", runner.pid, age
        )
        runner.stop_reason = "stuck"
        self._died(runner)

    def _freeze(self, runner: Runner, seen: Running | None) -> bool:
        """Freeze `runner` if it still runs `seen` (None: no task); True: frozen until `_thaw`
        or a kill."""
        if not runner.alive:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGSTOP)
        _wait_stopped(runner.pid)
        if runner.slot.running_frozen() == seen:
            return True
        self._thaw(runner)
        return False

    def _thaw(self, runner: Runner) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGCONT)

    # ---- runners' events ---------------------------------------------------------------------

    def _on_events(self, runner: Runner) -> None:
        while True:
            try:
                chunk = os.read(runner.events, READ_SIZE)
            except BlockingIOError:
                return
            if not chunk:  # EOF: it died
                self._died(runner)
                return
            for line in runner.lines.feed(chunk):
                self._event(runner, line)
            if len(chunk) < READ_SIZE:
                return

    def _event(self, runner: Runner, line: bytes) -> None:
        try:
            message: dict[str, Any] = json.loads(line)
            if "foreign" in message:
                self._on_foreign(int(message["priority"]), [int(i) for i in message["foreign"]])
            elif "progress" in message:
                task_id = int(message["progress"])
                self._board.begin(task_id, int(message["attempt"]), runner.worker_id)
                self._board.report(task_id, message["value"])
            elif "ended" in message:
                self._board.end(int(message["ended"]))
        except (ValueError, TypeError, KeyError):
            log.warning("a task runner sent a bad event line: %r", line[:200])

    # ---- death and settling ------------------------------------------------------------------

    def _died(self, runner: Runner) -> None:
        """`runner` died or is to die now: kill it for sure, then settle what it held (once:
        its exit may be reported again, by a fork server that dies later)."""
        if runner.settled or runner in self._settling:
            return
        runner.kill()
        if runner in self._live:
            self._live.remove(runner)
        loop = asyncio.get_running_loop()
        loop.remove_reader(runner.events)
        self._settling[runner] = loop.create_task(self._settle(runner), name="runner-settle")

    async def _settle(self, runner: Runner) -> None:
        try:
            # Its memory is final once it is gone; a fork server that never reports the exit is
            # stuck, and the kill above has taken effect by then.
            await asyncio.wait([runner.exited], timeout=FORK_TIMEOUT)
            await _gone(runner.pid)  # an exit settled as unknown says nothing: see it dead
            # Even after a clean exit: a claim whose answer was lost, or a take-back cut short,
            # can leave tasks held under its id that it never knew of.
            await self._settle_held(runner)
            if runner.returncode != 0:
                await self._late_claims(runner)
        except Exception:
            log.exception("settling the tasks of runner %d failed", runner.pid)
        finally:
            runner.settled = True
            os.close(runner.events)
            runner.slot.close()
            del self._settling[runner]
        if not self._stopping:
            task = asyncio.create_task(self._restart())
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _late_claims(self, runner: Runner) -> None:
        """Give back what a claim the runner sent before it died took after all: the statement
        may commit later (behind a lock) than the first look at what it held. It never ran."""
        held_by = functools.partial(self._claims.held_by, runner.worker_id)
        for delay in LATE_CLAIM_CHECKS:
            await asyncio.sleep(delay)
            late = await through_outages(held_by, "settling a dead runner's tasks")
            if late:
                given = await give_back(
                    self._claims, self._broker, runner.worker_id, [task.id for task in late]
                )
                log.warning("gave back %d task(s) a dead runner's claim took after it died", given)

    async def _settle_held(self, runner: Runner) -> None:
        decided = slot.items(runner.slot.outcomes())
        running = runner.slot.running_frozen()
        held_by = functools.partial(self._claims.held_by, runner.worker_id)
        held = await through_outages(held_by, "settling a dead runner's tasks")
        done = {task.id for task, _ in decided}
        items = list(decided)
        seconds: dict[int, float] = {}
        never_started: list[int] = []
        for task in held:
            if task.id in done:
                continue
            if running is None or (task.id, task.attempt) != running.attempt_of:
                never_started.append(task.id)
                continue
            seconds[task.id] = (time.monotonic_ns() - running.started) / 1e9
            finish = self._stopped(runner, task)
            if runner.stop_reason != "shutdown":
                job = Job.of(task, runner.worker_id)
                await asyncio.to_thread(discard_attempt, job)
            if finish is not None:  # else its lease was lost: the fence would refuse it anyway
                items.append((task, finish))
        await self._record(runner, items, seconds)
        if never_started:
            order = {task_id: n for n, task_id in enumerate(runner.slot.claimed_ids())}
            never_started.sort(key=lambda task_id: order.get(task_id, len(order)))
            await give_back(self._claims, self._broker, runner.worker_id, never_started)

    async def _record(
        self,
        runner: Runner,
        items: list[tuple[ClaimedTask, Finish]],
        seconds: dict[int, float],
    ) -> None:
        """Write outcomes of tasks `runner` held; push the handed-back ones again."""
        if not items:
            return
        recorder = Recorder(self._claims, runner.worker_id, OUTAGE_ERRORS)
        recorded = await recorder.write(items)
        back: dict[int, list[int]] = {}
        for task, finish in items:
            if task.id not in recorded:
                continue
            if finish.outcome == AttemptOutcome.HANDED_BACK:
                back.setdefault(task.priority, []).append(task.id)
            log_attempt(task, finish, seconds.get(task.id, 0.0), True)
        for priority, ids in back.items():
            with contextlib.suppress(*OUTAGE_ERRORS):  # else the sweeper pushes them
                await self._broker.push_oldest_first(ids, priority)
        self._announcer.recorded([item for item in items if item[0].id in recorded], seconds)

    def _stopped(self, runner: Runner, task: ClaimedTask) -> Finish | None:
        """How the task a runner was running when it died ended, by why it died."""
        reason = runner.stop_reason
        if reason == "lost":
            return None
        if reason == "shutdown":
            return outcomes.handed_back(task)
        if reason == "cancelled":
            return outcomes.cancelled(task)
        if reason == "timeout":
            error = outcomes.timeout_error(task.timeout_seconds)
        else:
            message = f"the process running the task {exit_description(runner.returncode)}"
            error = {"type": "RunnerCrashedError", "message": message, "traceback": ""}
        task_type = self._registry.types.get(task.task_type)
        return outcomes.decide(Outcome(error=error), task, task_type.cls if task_type else None)

    # ---- starting runners --------------------------------------------------------------------

    async def _restart(self) -> None:
        while not self._stopping:
            try:
                runner = await self._spawn()
            except Exception as exc:
                log.error("could not start a task runner; retrying in %gs: %s", RESTART_DELAY, exc)
                await asyncio.sleep(RESTART_DELAY)
                continue
            if self._stopping:
                self._died(runner)
                return
            if runner.alive:
                self._live.append(runner)
            return

    async def _spawn(self) -> Runner:
        ends = Ends(self._config)
        try:
            pid, exited = await self._forker.fork(ends.theirs)
        except BaseException:
            ends.close()
            raise
        ends.close_theirs()
        return self._supervise(pid, exited, ends)

    async def _adopt(self, zygote: ForkServer, ends: Ends, answer: Answer) -> Runner:
        """A runner the early fork server forked at once, once its answer comes; if that fork
        server died first, one forked by its successor."""
        try:
            pid, exited = await zygote.answer(answer)
        except RunnerError:
            ends.close_ours()
            return await self._spawn()
        except BaseException:
            ends.close_ours()
            raise
        return self._supervise(pid, exited, ends)

    def _supervise(self, pid: int, exited: Exited, ends: Ends) -> Runner:
        runner = Runner(pid, exited, ends.events, ends.slot, self._config)
        os.set_blocking(ends.events, False)
        asyncio.get_running_loop().add_reader(ends.events, self._on_events, runner)
        exited.add_done_callback(lambda _: self._died(runner))
        return runner

    def _fork_server_lost(self, zygote: ForkServer) -> None:
        if not self._stopping:
            log.error(
                "the task runner fork server (pid %d) died, and its runners; starting another",
                zygote.pid,
            )


async def _gone(pid: int) -> None:
    """Wait (up to FORK_TIMEOUT) until process `pid` has exited: its memory is final then."""
    for _ in range(int(FORK_TIMEOUT / GONE_POLL)):
        if not alive(pid):
            return
        await asyncio.sleep(GONE_POLL)


def _wait_stopped(pid: int) -> None:
    """Wait (briefly) until `pid` is stopped by the SIGSTOP just sent: its slot cannot change."""
    deadline = time.monotonic() + FREEZE_WAIT
    while time.monotonic() < deadline:
        fields = stat_fields(f"/proc/{pid}/stat")
        if fields is None or fields[0] in "TtZX":  # stopped, or gone
            return
        time.sleep(0.0002)


__all__ = ["RunnerError", "Runners"]
