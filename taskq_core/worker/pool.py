"""Runner processes for sync task types, and the pool a worker uses to keep them busy.

The pool starts one fork server (taskq_core.zygote), which loads the plugins once and forks each
runner, the first ones and every replacement, in milliseconds.

The protocol is JSON lines over each runner's private pair of pipes. The parent sends
`{"id": N, <the Job's fields>}` for each job and `{"skip": N}` for a job whose caller gave up
before it started. The runner runs the jobs in the order they came, one at a time, and answers
each, in that order, as soon as it is done: `{"id": N, "result": ..., "error": ...}`, or
`{"id": N, "skipped": true}`. The pool hands a runner several jobs at once (see MAX_IN_FLIGHT)
so it never waits for the parent between two of them, and reads replies in bulk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from taskq_core.errors import TaskqError
from taskq_core.execution import Instances, Job, Outcome, describe_error, unknown_type_error
from taskq_core.plugins import Registry

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds the fork server may take to import the plugins and say it is ready
FORK_TIMEOUT = 10.0  # seconds a fork may take: a fork server slower than that is stuck
CLOSE_TIMEOUT = 5.0  # seconds close() lets runners finish their jobs before killing them
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
READ_SIZE = 64 * 1024  # bytes per read of a pipe: its default capacity
CONTROL_SIZE = 64 * 1024  # bytes: the longest message the fork server sends
_JOB_FIELDS = tuple(f.name for f in fields(Job))  # dataclasses.asdict deep-copies: 10x slower


class RunnerError(TaskqError):
    """A task runner process failed."""


class _Lines:
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


# ---- the child: a runner, forked by the fork server (taskq_core.zygote) -------------------------


def serve(registry: Registry, jobs: int, replies: int) -> None:
    """Run each job read from the `jobs` pipe, answering on the `replies` pipe, until EOF.

    The pipes are the runner's private ones, not stdin and stdout: a task's print() cannot corrupt
    a reply nor its input() swallow the next job. Close-on-exec, so a subprocess a task starts
    cannot hold them open.
    """
    inbox = _Inbox(jobs)

    def send(message: dict[str, Any]) -> None:
        data = memoryview(json.dumps(message).encode() + b"\n")
        while data:
            data = data[os.write(replies, data) :]

    instances = Instances()
    while (job := inbox.next()) is not None:
        job_id, message = job
        if message is None:
            send({"id": job_id, "skipped": True})
            continue
        outcome = _run_message(registry, instances, message)
        try:
            send({"id": job_id, "result": outcome.result, "error": outcome.error})
        except (TypeError, ValueError) as exc:
            send({"id": job_id, "result": None, "error": describe_error(exc)})


class _Inbox:
    """The parent's messages, read ahead: the jobs to run in order, and those to skip."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._lines = _Lines()
        self._jobs: deque[Any] = deque()  # each a decoded message, or the error decoding it
        self._skip: set[Any] = set()  # ids of queued jobs the parent no longer wants run
        self._eof = False

    def next(self) -> tuple[Any, Any] | None:
        """The next job as (its id, its message, or None to skip it); None once stdin ended."""
        # Read even with jobs queued: a skip may have come for the one about to start.
        self._read()
        while not self._jobs:
            if self._eof:
                return None
            select.select([self._fd], [], [])
            self._read()
        message = self._jobs.popleft()
        job_id = message.pop("id", None) if isinstance(message, dict) else None
        if job_id is not None and job_id in self._skip:
            self._skip.discard(job_id)
            return job_id, None
        return job_id, message

    def _read(self) -> None:
        while not self._eof:
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True
                return
            for line in self._lines.feed(chunk):
                self._take(line)
            if len(chunk) < READ_SIZE:
                return

    def _take(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError as exc:
            self._jobs.append(exc)
            return
        if isinstance(message, dict) and "skip" in message:
            job_id = message["skip"]
            if any(isinstance(j, dict) and j.get("id") == job_id for j in self._jobs):
                self._skip.add(job_id)  # else it already ran: the parent gets its reply
            return
        self._jobs.append(message)


def _run_message(registry: Registry, instances: Instances, message: Any) -> Outcome:
    if isinstance(message, Exception):
        return Outcome(error=describe_error(message))
    try:
        job = Job(**message)
    except TypeError as exc:
        return Outcome(error=describe_error(exc))
    task_type = registry.types.get(job.task_type)
    if task_type is None:
        return Outcome(error=unknown_type_error(registry, job.task_type))
    if task_type.is_async:
        message = f"{job.task_type} is async: it runs in the worker's event loop, not in a runner"
        return Outcome(error={"type": "RunnerError", "message": message, "traceback": ""})
    return instances.run_sync(task_type, job)


# ---- the parent: a pool of runners -----------------------------------------------------------


def _error(kind: str, message: str) -> Outcome:
    return Outcome(error={"type": kind, "message": message, "traceback": ""})


def _exit_description(code: int | None) -> str:
    if code is None:  # its fork server died before reporting it, and took it along
        return "was stopped when the task runner fork server died"
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class _Call:
    """One `run` call: its job line, and its future. It waits in the pool's queue until it is
    sent to a runner (`runner` is set while it is there, until its reply comes)."""

    __slots__ = ("end", "future", "id", "line", "runner", "task_id", "timeout")

    def __init__(
        self, call_id: int, job: Job, timeout: float | None, future: asyncio.Future[Outcome]
    ) -> None:
        message = {name: getattr(job, name) for name in _JOB_FIELDS}
        message["id"] = call_id
        self.line = json.dumps(message).encode() + b"\n"
        self.id = call_id
        self.task_id = job.task_id
        self.timeout = timeout
        self.future = future
        self.runner: _Runner | None = None
        self.end = 0  # where its line ends in the runner's job stream: sent once written >= end

    def resolve(self, outcome: Outcome) -> None:
        if not self.future.done():  # done: its caller was cancelled
            self.future.set_result(outcome)


class _Exit(asyncio.SubprocessProtocol):
    """Tells when the fork server process has been reaped."""

    def __init__(self) -> None:
        self.exited = asyncio.get_running_loop().create_future()

    def process_exited(self) -> None:
        self.exited.set_result(None)


class _Zygote:
    """The fork server process (taskq_core.zygote, whose docstring has the protocol) and the
    pool's end of its control socket."""

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        exited: asyncio.Future[None],
        control: socket.socket,
    ) -> None:
        loop = exited.get_loop()
        self.transport = transport
        self.pid = transport.get_pid()
        self.exited = exited  # never await it bare: cancelling the waiter would cancel it
        self.control = control
        self.ready: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self.forks: deque[asyncio.Future[tuple[int, asyncio.Future[int | None]]]] = deque()
        self.runners: dict[int, asyncio.Future[int | None]] = {}  # exit statuses to come
        self.gone = False  # its control socket is closed: it forks no more
        self.on_lost: Callable[[], None] | None = None  # called if it dies while in use
        exited.add_done_callback(lambda _: transport.close())
        loop.add_reader(control.fileno(), self._on_readable)

    @classmethod
    async def start(
        cls, env: Mapping[str, str] | None, spawned: asyncio.Event | None = None
    ) -> _Zygote:
        """Start a fork server (`spawned` is set once its process exists) and wait until it has
        loaded the plugins; RunnerError if it can't."""
        loop = asyncio.get_running_loop()
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Forked by the event loop's thread: the parent-death signal fires when that thread
            # ends, so the pool must live in a loop that runs for the life of the worker process.
            transport, protocol = await loop.subprocess_exec(
                _Exit,
                sys.executable,
                "-m",
                "taskq_core.zygote",
                str(os.getpid()),
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # Our stderr: what it prints, at start-up or in a task, goes with the logs.
                stdout=2,
                stderr=None,
                env=env,
                # Its own session: a terminal's Ctrl-C reaches only the worker, which decides
                # when runners stop.
                start_new_session=True,
            )
        except BaseException:
            control.close()
            raise
        finally:
            theirs.close()
        if spawned is not None:
            spawned.set()
        control.setblocking(False)
        zygote = cls(transport, protocol.exited, control)
        try:
            await zygote._handshake()
        except BaseException:
            await zygote.stop(grace=0)
            raise
        return zygote

    async def _handshake(self) -> None:
        """Wait for the ready message; RunnerError saying why it never came."""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                message = await asyncio.shield(self.ready)
                if message is None:
                    await asyncio.shield(self.exited)
                    raise RunnerError(
                        "the task runner fork server "
                        f"{_exit_description(self.transport.get_returncode())} before it was "
                        "ready (its error output is above, in this process's stderr)"
                    )
        except TimeoutError:
            raise RunnerError(
                f"the task runner fork server was not ready within {START_TIMEOUT:g}s"
            ) from None
        if message["ready"] is not True:
            error = message.get("error") or {}
            raise RunnerError(
                f"task runners could not load the plugins: {error.get('type')}: "
                f"{error.get('message')}\n{error.get('traceback', '')}"
            )

    async def fork(self, jobs: int, replies: int) -> tuple[int, asyncio.Future[int | None]]:
        """Fork a runner on these pipe ends: its pid, and its exit status to come."""
        if self.gone:
            raise RunnerError("the task runner fork server died")
        try:
            socket.send_fds(self.control, [b"fork"], [jobs, replies])
        except OSError as exc:
            raise RunnerError(f"could not reach the task runner fork server: {exc}") from exc
        forked: asyncio.Future[tuple[int, asyncio.Future[int | None]]]
        forked = asyncio.get_running_loop().create_future()
        self.forks.append(forked)
        try:
            async with asyncio.timeout(FORK_TIMEOUT):
                return await forked
        except TimeoutError:
            self.kill()  # its death replaces it, as any other's would
            raise RunnerError(
                f"the task runner fork server did not fork within {FORK_TIMEOUT:g}s; killed it"
            ) from None

    def kill(self) -> None:
        if not self.exited.done():
            self.transport.kill()

    async def stop(self, grace: float = CLOSE_TIMEOUT) -> None:
        """Close the control socket: at EOF it exits; killed if it has not within `grace` seconds.
        Exits of runners still running then are never reported: they count as unknown."""
        self.on_lost = None
        self._lose()
        if grace > 0:
            await asyncio.wait([self.exited], timeout=grace)
        self.kill()
        await asyncio.shield(self.exited)

    def _on_readable(self) -> None:
        while not self.gone:
            try:
                data = self.control.recv(CONTROL_SIZE)
            except BlockingIOError:
                return
            except OSError:  # ECONNRESET: it died
                data = b""
            if not data:
                self._lose()
                return
            message = json.loads(data)
            if "exited" in message:
                exited = self.runners.pop(message["exited"], None)
                if exited is not None:  # else its fork was cancelled
                    exited.set_result(message["returncode"])
            elif "forked" in message:
                self._forked(message)
            else:
                self.ready.set_result(message)

    def _forked(self, message: dict[str, Any]) -> None:
        forked = self.forks.popleft()  # it answers the requests in order
        if forked.done():  # cancelled: the runner finds its job pipe closed and exits
            return
        if message["forked"] is None:
            failed = f"the task runner fork server could not fork: {message.get('error')}"
            forked.set_exception(RunnerError(failed))
            return
        exited = forked.get_loop().create_future()
        # Before anyone awaits the answer: the runner's exit may be in the very next message.
        self.runners[message["forked"]] = exited
        forked.set_result((message["forked"], exited))

    def _lose(self) -> None:
        """The control socket is closed, by EOF or by stop(): settle everything still pending."""
        if self.gone:
            return
        self.gone = True
        self.exited.get_loop().remove_reader(self.control.fileno())
        self.control.close()
        for forked in self.forks:
            if not forked.done():
                forked.set_exception(RunnerError("the task runner fork server died"))
        self.forks.clear()
        if not self.ready.done():
            self.ready.set_result(None)  # _handshake says why
        if self.on_lost is not None:
            self.on_lost()  # while the runners' exits are pending: their groups get killed
        # The parent-death signal killed them; their statuses went to whoever reaped them.
        for exited in self.runners.values():
            exited.set_result(None)
        self.runners.clear()


class _Runner:
    """One runner process, its pipes, and the calls sent to it, in order: the first one runs."""

    def __init__(
        self,
        pid: int,
        exited: asyncio.Future[int | None],
        jobs_fd: int,
        replies_fd: int,
    ) -> None:
        self.pid = pid
        self.exited = exited  # its exit status; never await it bare: cancelling would cancel it
        self.jobs_fd = jobs_fd  # -1 once closed
        self.replies_fd = replies_fd
        self.alive = True  # False once killed, or found dead: it takes no more jobs
        self.calls: deque[_Call] = deque()
        self.lines = _Lines()
        self.outbox = bytearray()  # job bytes the pipe had no room for yet
        self.queued = 0  # bytes handed to the job pipe so far
        self.written = 0  # bytes the job pipe took so far
        self.head_started = 0.0  # loop time when the first call started
        self.deadline: float | None = None  # when the first call overruns its timeout
        self.timer: asyncio.TimerHandle | None = None
        self.crashed: _Call | None = None  # gets the crash error once the exit status is known

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    def end_jobs(self) -> None:
        """Close the job pipe: the runner finishes the jobs it has, then exits."""
        if self.jobs_fd >= 0:
            if self.outbox:
                self.exited.get_loop().remove_writer(self.jobs_fd)
            os.close(self.jobs_fd)
            self.jobs_fd = -1

    def kill(self) -> None:
        """SIGKILL the runner's process group: the runner and any subprocess its task started."""
        if not self.alive:
            return
        self.alive = False
        if self.timer is not None:
            self.timer.cancel()
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.end_jobs()
        self.exited.get_loop().remove_reader(self.replies_fd)
        os.close(self.replies_fd)


class RunnerPool:
    """`size` runner processes; `run` hands each job to the runner with the fewest, in order.

    A runner that times out, is cancelled or dies is SIGKILLed and replaced in the background;
    the jobs queued behind its running one go to other runners. If the fork server dies, its
    runners die with it: they are retired likewise, and the first replacement starts another.
    """

    def __init__(self, size: int, *, env: Mapping[str, str] | None = None) -> None:
        if size < 1:
            raise ValueError(f"a runner pool needs at least one runner, not {size}")
        self._size = size
        self._env = dict(env) if env is not None else None
        self._queue: deque[_Call] = deque()  # calls waiting for a runner, first come first served
        self._live: list[_Runner] = []  # runners taking jobs
        self._runners: set[_Runner] = set()  # every runner not yet reaped: live or dying
        self._restarts: set[asyncio.Task[None]] = set()
        self._zygote: asyncio.Task[_Zygote] | None = None  # the fork server, started or starting
        self._spawned = asyncio.Event()  # the first fork server's process exists
        self._started = False
        self._ids = itertools.count()
        self._dispatching = False  # a _dispatch is scheduled
        self._depth = 8  # jobs in flight per runner, until the job time is known
        self._job_seconds: float | None = None  # running average
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        """How many runners wait for a job."""
        return sum(1 for runner in self._live if not runner.calls)

    @property
    def pids(self) -> list[int]:
        """The process ids of the runners not yet reaped."""
        return sorted(r.pid for r in self._runners)

    async def prepare(self) -> None:
        """Start the fork server's process and return as soon as it exists: it loads the plugins
        while the caller goes on (the worker imports its own modules meanwhile, on another core).
        `start` then waits for it."""
        starting = self._fork_server()
        spawned = asyncio.ensure_future(self._spawned.wait())
        await asyncio.wait({starting, spawned}, return_when=asyncio.FIRST_COMPLETED)
        spawned.cancel()

    async def start(self) -> None:
        """Start the fork server (unless `prepare` did), wait until it has loaded the plugins
        (RunnerError if it can't), then fork the runners."""
        if self._started or self._closed:
            raise RunnerError("the runner pool was already started")
        self._started = True
        try:
            await self._fork_server()
        except BaseException:
            await self.close()
            raise
        started = await asyncio.gather(
            *(self._spawn() for _ in range(self._size)), return_exceptions=True
        )
        for runner in started:
            # One that died meanwhile was retired, and its replacement is on its way.
            if isinstance(runner, _Runner) and runner.alive:
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
        call = _Call(next(self._ids), job, timeout, loop.create_future())
        self._queue.append(call)
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
        # Last: it reports the runners' exits until they are all gone.
        if self._zygote is not None:
            self._zygote.cancel()  # if it is still starting
            zygote = (await asyncio.gather(self._zygote, return_exceptions=True))[0]
            self._zygote = None
            if isinstance(zygote, _Zygote):
                await zygote.stop()

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
        batches: dict[_Runner, list[_Call]] = {}
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
                self._start_clock(runner)
            batches.setdefault(runner, []).append(call)
        for runner, calls in batches.items():
            end = runner.queued
            for call in calls:
                end += len(call.line)
                call.end = end
            self._write(runner, b"".join(call.line for call in calls))

    def _write(self, runner: _Runner, data: bytes) -> None:
        """Write `data` to the runner's job pipe; what does not fit waits until it drains."""
        if not runner.alive or runner.jobs_fd < 0:
            return
        runner.queued += len(data)
        if runner.outbox:
            runner.outbox += data
            return
        try:
            written = os.write(runner.jobs_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # EPIPE: it died (the OOM killer, an operator's kill)
            self._lost(runner)
            return
        runner.written += written
        if written < len(data):
            runner.outbox += data[written:]
            asyncio.get_running_loop().add_writer(runner.jobs_fd, self._on_writable, runner)

    def _on_writable(self, runner: _Runner) -> None:
        try:
            written = os.write(runner.jobs_fd, runner.outbox)
        except BlockingIOError:
            return
        except OSError:
            self._lost(runner)
            return
        runner.written += written
        del runner.outbox[:written]
        if not runner.outbox:
            asyncio.get_running_loop().remove_writer(runner.jobs_fd)

    def _abandon(self, call: _Call) -> None:
        """`call`'s caller was cancelled: make sure its job does not run, or stops."""
        runner = call.runner
        if runner is None:  # waiting in the queue (_dispatch drops it), or already answered
            return
        if call is not runner.calls[0]:
            self._write(runner, b'{"skip": %d}\n' % call.id)  # it answers "skipped"
            return
        if not self._read(runner):  # running, unless its reply is waiting in the pipe
            self._lost(runner)
        elif call.runner is runner:
            self._retire(runner, None)

    # ---- replies

    def _on_readable(self, runner: _Runner) -> None:
        if not self._read(runner):
            self._lost(runner)

    def _read(self, runner: _Runner) -> bool:
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
            self._start_clock(runner, now)
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

    def _reply(self, runner: _Runner, line: bytes) -> bool:
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
                else Outcome(result=message["result"], error=message["error"])
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

    def _start_clock(self, runner: _Runner, now: float | None = None) -> None:
        """The first call has just started: time it."""
        loop = asyncio.get_running_loop()
        runner.head_started = loop.time() if now is None else now
        timeout = runner.calls[0].timeout
        if timeout is None:
            runner.deadline = None
            return
        runner.deadline = runner.head_started + timeout
        # One timer per runner, not per job: one that fires early sets itself again.
        if runner.timer is None or runner.timer.when() > runner.deadline:
            if runner.timer is not None:
                runner.timer.cancel()
            runner.timer = loop.call_at(runner.deadline, self._on_timer, runner)

    def _on_timer(self, runner: _Runner) -> None:
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

    def _lost(self, runner: _Runner) -> None:
        """The runner died by itself: act on the replies it left, then retire it."""
        if not runner.alive:
            return
        self._read(runner)
        if runner.alive:
            self._retire(runner, None)

    def _retire(self, runner: _Runner, outcome: Outcome | None) -> None:
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

    def _crash(self, runner: _Runner) -> Outcome:
        message = f"the process running the task {_exit_description(runner.returncode)}"
        return _error("RunnerCrashedError", message)

    def _reaped(self, runner: _Runner, _: object) -> None:
        self._runners.discard(runner)
        if runner.alive:
            self._lost(runner)  # before its pipe's EOF was read
        if runner.crashed is not None:
            runner.crashed.resolve(self._crash(runner))
            runner.crashed = None

    async def _restart(self, old: _Runner) -> None:
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

    async def _spawn(self) -> _Runner:
        """Fork one runner: ready at once, its jobs wait in its pipe until it reads them."""
        zygote = await asyncio.shield(self._fork_server())  # shared by concurrent spawns
        jobs_in, jobs_out = os.pipe()
        replies_in, replies_out = os.pipe()
        try:
            pid, exited = await zygote.fork(jobs_in, replies_out)
        except BaseException:
            os.close(jobs_out)
            os.close(replies_in)
            raise
        finally:
            os.close(jobs_in)
            os.close(replies_out)
        os.set_blocking(jobs_out, False)
        os.set_blocking(replies_in, False)
        runner = _Runner(pid, exited, jobs_out, replies_in)
        self._runners.add(runner)
        exited.add_done_callback(functools.partial(self._reaped, runner))
        asyncio.get_running_loop().add_reader(replies_in, self._on_readable, runner)
        return runner

    # ---- the fork server

    def _fork_server(self) -> asyncio.Task[_Zygote]:
        """The fork server: the running one, or one starting, or else a new one."""
        if self._zygote is None:
            self._zygote = asyncio.create_task(self._start_fork_server())
        return self._zygote

    async def _start_fork_server(self) -> _Zygote:
        try:
            zygote = await _Zygote.start(self._env, self._spawned)
        except BaseException:
            self._zygote = None  # the next spawn tries again
            raise
        zygote.on_lost = functools.partial(self._fork_server_lost, zygote)
        return zygote

    def _fork_server_lost(self, zygote: _Zygote) -> None:
        """The fork server died, and its runners with it: retire them. Their restarts start a new
        fork server once their exits are settled, which comes right after this."""
        if self._closed:
            return
        log.error(
            "the task runner fork server (pid %d) died; starting another, and new runners",
            zygote.pid,
        )
        self._zygote = None
        for runner in list(self._runners):
            self._lost(runner)


def _load(runner: _Runner) -> int:
    return len(runner.calls)
