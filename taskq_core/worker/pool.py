"""The runner pool: the worker's end of its runner processes, which run sync task types.

The pool starts one fork server (`zygote`, through `forkserver`), which loads the plugins once
and forks each runner, the first ones and every replacement, in milliseconds. Each runner
(`runner`) reads JSON-line jobs from a private pipe and answers each in order. The pool hands a
runner several jobs at once (see MAX_IN_FLIGHT) so it never waits for the parent between two of
them, reads replies in bulk, times each job and kills a runner whose job overruns its timeout.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from taskq_core.worker.execution import Job, Outcome
from taskq_core.worker.forkserver import (
    CLOSE_TIMEOUT,
    FORK_TIMEOUT,
    Forked,
    Forker,
    ForkServer,
    RunnerError,
    exit_description,
)
from taskq_core.worker.handles import Call, RunnerHandle
from taskq_core.worker.runner import READ_SIZE

__all__ = ["RunnerError", "RunnerPool"]

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds between attempts to replace a runner that would not start
MAX_REPLY = 64 * 1024 * 1024  # bytes: the longest reply line (one task's result) accepted
# Jobs handed to one runner at once: the one it runs and those queued behind it. Enough that it
# never waits for the parent between jobs and that each pipe write and read carries many (every
# one wakes the other process, which costs more than a short job); yet only as many as run in
# about PIPELINE_SECONDS, so a slow job holds few others back and an idle runner soon gets the
# next one. The pool learns the typical job time from the replies.
MIN_IN_FLIGHT, MAX_IN_FLIGHT = 2, 32
PIPELINE_SECONDS = 0.01
JOB_TIME_WEIGHT = 0.2  # of each new measurement in the running average of the job time
PROGRESS_PREFIX = b'{"progress"'  # how a runner's progress lines start (runner.serve)


def _error(kind: str, message: str) -> Outcome:
    return Outcome(error={"type": kind, "message": message, "traceback": ""})


class RunnerPool:
    """`size` runner processes; `run` hands each job to the runner with the fewest, in order.

    A runner that times out, is cancelled or dies is SIGKILLed and replaced in the background;
    the jobs queued behind its running one go to other runners. If the fork server dies, its
    runners die with it: they are retired likewise, and the first replacement starts another.
    """

    def __init__(
        self, size: int, *, env: Mapping[str, str] | None = None, early: Forked | None = None
    ) -> None:
        """`env`: the runners' environment; `early`: a fork server forked already (by
        forkserver.fork_early, with `env`), adopted by `start`, else one is spawned."""
        if size < 1:
            raise ValueError(f"a runner pool needs at least one runner, not {size}")
        self._size = size
        self._queue: deque[Call] = deque()  # calls waiting for a runner, first come first served
        self._live: list[RunnerHandle] = []  # runners taking jobs
        self._runners: set[RunnerHandle] = set()  # every runner not yet reaped: live or dying
        self._restarts: set[asyncio.Task[None]] = set()
        self._forker = Forker(env, early, self._fork_server_lost)
        self._started = False
        self._ids = itertools.count()
        self._dispatching = False  # a _dispatch is scheduled
        self._depth = 8  # jobs in flight per runner, until the job time is known
        self._job_seconds: float | None = None  # running average
        self._closed = False
        # Told each progress value a runner sends for its running job: (task id, value).
        self.on_progress: Callable[[int, dict[str, Any]], None] | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def job_seconds(self) -> float | None:
        """The running average of a job's time in a runner (None before the first reply)."""
        return self._job_seconds

    @property
    def idle(self) -> int:
        """How many runners wait for a job."""
        return sum(1 for runner in self._live if not runner.calls)

    @property
    def pids(self) -> list[int]:
        """The process ids of the runners not yet reaped."""
        return sorted(r.pid for r in self._runners)

    async def start(self) -> None:
        """Start the fork server (or adopt the early one), wait until it has loaded the plugins
        (RunnerError if it can't), then fork the runners."""
        if self._started or self._closed:
            raise RunnerError("the runner pool was already started")
        self._started = True
        try:
            await self._forker.server()
        except BaseException:
            await self.close()
            raise
        started = await asyncio.gather(
            *(self._spawn() for _ in range(self._size)), return_exceptions=True
        )
        for runner in started:
            # One that died meanwhile was retired, and its replacement is on its way.
            if isinstance(runner, RunnerHandle) and runner.alive:
                self._live.append(runner)
        failures = [r for r in started if isinstance(r, BaseException)]
        if failures:
            await self.close()
            raise failures[0]

    # A task timeout is not the caller's asyncio timeout: it kills the runner and is an outcome.
    async def run(self, job: Job, timeout: float | None) -> Outcome:  # noqa: ASYNC109
        """Run `job` in a runner; stop it `timeout` seconds after it starts (None: no limit)."""
        if self._closed:
            raise RunnerError("the runner pool is closed")
        loop = asyncio.get_running_loop()
        call = Call(next(self._ids), job, timeout, loop.create_future())
        self._queue.append(call)
        if len(self._queue) == 1 and self.idle:
            self._dispatch()  # a runner waits: the job goes now, not a turn of the loop later
        else:
            self._schedule_dispatch()
        try:
            return await call.future
        except asyncio.CancelledError:
            self._abandon(call)
            raise

    async def close(self, grace: float = CLOSE_TIMEOUT) -> None:
        """Send each runner EOF, give them `grace` seconds to finish their jobs, kill the rest."""
        if self._closed:
            return
        self._closed = True
        self._forker.drop_early()
        closed = RunnerError("the runner pool is closed")
        for call in self._queue:
            if not call.future.done():
                call.future.set_exception(closed)
        self._queue.clear()
        for task in self._restarts:
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        runners = list(self._runners)
        for runner in runners:
            runner.end_jobs()  # EOF: an idle runner exits now, a busy one after its jobs
        if runners:
            await asyncio.wait([r.exited for r in runners], timeout=grace)
            for runner in runners:
                if runner.alive:
                    self._retire(runner, None)  # its running call gets the crash error
            # Killed, they are gone in a moment; unless the fork server is stuck and does not
            # report it: stopping it settles their exits then.
            await asyncio.wait([r.exited for r in runners], timeout=CLOSE_TIMEOUT)
        self._live.clear()
        self._runners.clear()
        await self._forker.stop()  # last: it reports the runners' exits until they are all gone

    # ---- handing out jobs

    def _schedule_dispatch(self) -> None:
        # Once per loop iteration: the calls that arrive meanwhile go out in one write per runner.
        if not self._dispatching:
            self._dispatching = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Hand waiting calls to the runners with the fewest, up to `_depth` each."""
        self._dispatching = False
        queue, live = self._queue, self._live
        batches: dict[RunnerHandle, list[Call]] = {}
        while queue and live:
            call = queue[0]
            if call.future.done():  # its caller was cancelled while it waited here
                queue.popleft()
                continue
            runner = min(live, key=_load)
            if len(runner.calls) >= self._depth:
                break
            queue.popleft()
            runner.calls.append(call)
            call.runner = runner
            if len(runner.calls) == 1:  # it was idle: the clock starts now
                runner.start_clock(None, self._on_timer)
            batches.setdefault(runner, []).append(call)
        for runner, calls in batches.items():
            end = runner.queued
            for call in calls:
                end += len(call.line)
                call.end = end
            runner.write(b"".join(call.line for call in calls))

    def _abandon(self, call: Call) -> None:
        """`call`'s caller was cancelled: make sure its job does not run, or stops."""
        runner = call.runner
        if runner is None:  # waiting in the queue (_dispatch drops it), or already answered
            return
        if call is not runner.calls[0]:
            runner.write(b'{"skip": %d}\n' % call.id)  # it answers "skipped"
            return
        if not self._read(runner):  # running, unless its reply is waiting in the pipe
            self._lost(runner)
        elif call.runner is runner:
            self._retire(runner, None)

    # ---- replies

    def _on_readable(self, runner: RunnerHandle) -> None:
        if not self._read(runner):
            self._lost(runner)

    def _read(self, runner: RunnerHandle) -> bool:
        """Act on every reply waiting in the runner's pipe; False at EOF."""
        now = asyncio.get_running_loop().time()
        calls = runner.calls
        head = calls[0] if calls else None
        answered = 0
        while runner.alive:
            try:
                chunk = os.read(runner.replies_fd, READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                return False
            for line in runner.lines.feed(chunk):
                if line.startswith(PROGRESS_PREFIX):
                    self._progress(runner, line)
                    continue
                if not self._reply(runner, line):
                    return True  # a bad reply: the runner is gone
                answered += 1
            if len(runner.lines.partial) > MAX_REPLY:
                too_big = f"the task's result is larger than {MAX_REPLY // 2**20} MiB"
                self._retire(runner, _error("RunnerError", too_big))
                return True
            if len(chunk) < READ_SIZE:
                break
        if answered:
            self._observe((now - runner.head_started) / answered)
        if runner.alive and calls and calls[0] is not head:
            # A job starts when the reply before it arrives; the pipe has room for more.
            runner.start_clock(now, self._on_timer)
        if self._queue and len(calls) < self._depth:
            self._schedule_dispatch()
        return True

    def _observe(self, job_seconds: float) -> None:
        """Fold one measured job time into the average; size the pipeline to it."""
        average = self._job_seconds
        average = (
            job_seconds if average is None else average + JOB_TIME_WEIGHT * (job_seconds - average)
        )
        self._job_seconds = average
        fits = int(PIPELINE_SECONDS / average) if average > 0 else MAX_IN_FLIGHT
        self._depth = max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, fits))

    def _progress(self, runner: RunnerHandle, line: bytes) -> None:
        """A progress report of the running job: passed on, never taken for its reply."""
        if not runner.calls or self.on_progress is None:
            return
        call = runner.calls[0]
        try:
            message = json.loads(line)
            if message["progress"] != call.id or not isinstance(message["value"], dict):
                return  # late, from a job that has been answered: dropped
        except (ValueError, TypeError, KeyError):
            log.warning("a task runner sent a bad progress line: %r", line[:200])
            return
        self.on_progress(call.task_id, message["value"])

    def _reply(self, runner: RunnerHandle, line: bytes) -> bool:
        """Give the first call its outcome; False if the reply is bad (the runner is retired)."""
        if not runner.calls:
            self._retire(runner, None)
            log.error("a task runner sent a reply nobody asked for: %r", line[:200])
            return False
        call = runner.calls[0]
        try:
            message = json.loads(line)
            if message["id"] != call.id:
                raise ValueError(f"the reply is for job {message['id']}, not {call.id}")
            outcome = (
                None
                if message.get("skipped")
                else Outcome(
                    result=message["result"],
                    error=message["error"],
                    artifacts=message.get("artifacts") or [],
                )
            )
        except (ValueError, TypeError, KeyError) as exc:
            bad = f"the process running the task sent a bad reply: {exc}"
            self._retire(runner, _error("RunnerError", bad))
            return False
        runner.calls.popleft()
        call.runner = None
        if outcome is not None:
            if call.future.done():
                # The cancellation reached the runner after it started the job: it ran, in vain.
                log.info("task %d ran although its caller was cancelled", call.task_id)
            call.resolve(outcome)
        return True

    # ---- timeouts

    def _on_timer(self, runner: RunnerHandle) -> None:
        runner.timer = None
        loop = asyncio.get_running_loop()
        if not runner.alive or runner.deadline is None:
            return
        if loop.time() >= runner.deadline and not self._read(runner):  # it may have just finished
            self._lost(runner)
            return
        if not runner.alive or runner.deadline is None or not runner.calls:
            return
        if loop.time() < runner.deadline:
            runner.timer = loop.call_at(runner.deadline, self._on_timer, runner)
            return
        timeout = runner.calls[0].timeout
        assert timeout is not None
        message = f"task exceeded its timeout of {timeout:g}s and was stopped"
        self._retire(runner, _error("TaskTimeoutError", message))

    # ---- losing and replacing runners

    def _lost(self, runner: RunnerHandle) -> None:
        """The runner died by itself: act on the replies it left, then retire it."""
        if not runner.alive:
            return
        self._read(runner)
        if runner.alive:
            self._retire(runner, None)

    def _retire(self, runner: RunnerHandle, outcome: Outcome | None) -> None:
        """Kill `runner`; its running call gets `outcome` (None: the crash error, once the exit
        status is known). The calls behind it never started: they go back to the queue's front."""
        runner.kill()
        if runner in self._live:
            self._live.remove(runner)
        calls = runner.calls
        runner.calls = deque()
        if calls and calls[0].end <= runner.written:  # else it never reached the runner
            head = calls.popleft()
            head.runner = None
            if outcome is not None:
                head.resolve(outcome)
            elif runner.exited.done():
                head.resolve(self._crash(runner))
            else:
                runner.crashed = head
        for call in calls:
            call.runner = None
        waiting = [call for call in calls if not call.future.done()]
        if self._closed:
            for call in waiting:
                call.future.set_exception(RunnerError("the runner pool is closed"))
            return
        self._queue.extendleft(reversed(waiting))
        self._schedule_dispatch()
        task = asyncio.create_task(self._restart(runner))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    def _crash(self, runner: RunnerHandle) -> Outcome:
        message = f"the process running the task {exit_description(runner.returncode)}"
        return _error("RunnerCrashedError", message)

    def _reaped(self, runner: RunnerHandle, _: object) -> None:
        self._runners.discard(runner)
        if runner.alive:
            self._lost(runner)  # before its pipe's EOF was read
        if runner.crashed is not None:
            runner.crashed.resolve(self._crash(runner))
            runner.crashed = None

    async def _restart(self, old: RunnerHandle) -> None:
        # Once it is gone (killed, it is in a moment): if its fork server died, the pool knows by
        # then. A fork server that never reports the exit is stuck, which the fork finds out.
        await asyncio.wait([old.exited], timeout=FORK_TIMEOUT)
        while not self._closed:
            try:
                runner = await self._spawn()
            except Exception as exc:
                log.error("could not start a task runner; retrying in %gs: %s", RESTART_DELAY, exc)
                await asyncio.sleep(RESTART_DELAY)
                continue
            if self._closed:  # close() ran while it started
                runner.kill()
                return
            self._live.append(runner)
            self._schedule_dispatch()
            return

    async def _spawn(self) -> RunnerHandle:
        """Fork one runner: ready at once, its jobs wait in its pipe until it reads them."""
        jobs_in, jobs_out = os.pipe()
        replies_in, replies_out = os.pipe()
        try:
            pid, exited = await self._forker.fork([jobs_in, replies_out])
        except BaseException:
            os.close(jobs_out)
            os.close(replies_in)
            raise
        finally:
            os.close(jobs_in)
            os.close(replies_out)
        os.set_blocking(jobs_out, False)
        os.set_blocking(replies_in, False)
        runner = RunnerHandle(pid, exited, jobs_out, replies_in, on_broken=self._lost)
        self._runners.add(runner)
        exited.add_done_callback(functools.partial(self._reaped, runner))
        asyncio.get_running_loop().add_reader(replies_in, self._on_readable, runner)
        return runner

    # ---- the fork server

    def _fork_server_lost(self, zygote: ForkServer) -> None:
        """The fork server died, and its runners with it: retire them. Their restarts start a new
        fork server once their exits are settled, which comes right after this."""
        if self._closed:
            return
        log.error(
            "the task runner fork server (pid %d) died; starting another, and new runners",
            zygote.pid,
        )
        for runner in list(self._runners):
            self._lost(runner)


def _load(runner: RunnerHandle) -> int:
    return len(runner.calls)
