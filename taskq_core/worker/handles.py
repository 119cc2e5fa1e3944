"""The pool's handles: one runner process with its pipes, and one call sent to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import fields

from taskq_core.worker.execution import Job, Outcome
from taskq_core.worker.runner import Lines

_JOB_FIELDS = tuple(f.name for f in fields(Job))  # dataclasses.asdict deep-copies: 10x slower


class Call:
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
        self.runner: RunnerHandle | None = None
        self.end = 0  # where its line ends in the runner's job stream: sent once written >= end

    def resolve(self, outcome: Outcome) -> None:
        if not self.future.done():  # done: its caller was cancelled
            self.future.set_result(outcome)


class RunnerHandle:
    """One runner process, its pipes, and the calls sent to it, in order: the first one runs."""

    def __init__(
        self,
        pid: int,
        exited: asyncio.Future[int | None],
        jobs_fd: int,
        replies_fd: int,
        on_broken: Callable[[RunnerHandle], None],
    ) -> None:
        self.pid = pid
        self.on_broken = on_broken  # called when the job pipe breaks: the runner died
        self.exited = exited  # its exit status; never await it bare: cancelling would cancel it
        self.jobs_fd = jobs_fd  # -1 once closed
        self.replies_fd = replies_fd
        self.alive = True  # False once killed, or found dead: it takes no more jobs
        self.calls: deque[Call] = deque()
        self.lines = Lines()
        self.outbox = bytearray()  # job bytes the pipe had no room for yet
        self.queued = 0  # bytes handed to the job pipe so far
        self.written = 0  # bytes the job pipe took so far
        self.head_started = 0.0  # loop time when the first call started
        self.deadline: float | None = None  # when the first call overruns its timeout
        self.timer: asyncio.TimerHandle | None = None
        self.crashed: Call | None = None  # gets the crash error once the exit status is known

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

    def write(self, data: bytes) -> None:
        """Write `data` to the job pipe; what does not fit waits until it drains."""
        if not self.alive or self.jobs_fd < 0:
            return
        self.queued += len(data)
        if self.outbox:
            self.outbox += data
            return
        try:
            written = os.write(self.jobs_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # EPIPE: it died (the OOM killer, an operator's kill)
            self.on_broken(self)
            return
        self.written += written
        if written < len(data):
            self.outbox += data[written:]
            self.exited.get_loop().add_writer(self.jobs_fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            written = os.write(self.jobs_fd, self.outbox)
        except BlockingIOError:
            return
        except OSError:
            self.on_broken(self)
            return
        self.written += written
        del self.outbox[:written]
        if not self.outbox:
            self.exited.get_loop().remove_writer(self.jobs_fd)

    def start_clock(self, now: float | None, on_deadline: Callable[[RunnerHandle], None]) -> None:
        """The first call has just started (at loop time `now`, or now): time it."""
        loop = self.exited.get_loop()
        self.head_started = loop.time() if now is None else now
        timeout = self.calls[0].timeout
        if timeout is None:
            self.deadline = None
            return
        self.deadline = self.head_started + timeout
        # One timer per runner, not per job: one that fires early sets itself again.
        if self.timer is None or self.timer.when() > self.deadline:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = loop.call_at(self.deadline, on_deadline, self)
