"""A runner: the child process that runs sync tasks' jobs read from its pipe, one at a time.

Forked by the fork server (`zygote`) on a pair of private pipes. The protocol is JSON lines: the
pool sends `{"id": N, <the Job's fields>}` for each job and `{"skip": N}` for a job whose caller
gave up before it started. The runner runs the jobs in the order they came and answers each, in
that order, as soon as it is done: `{"id": N, "result": ..., "error": ...}`, or
`{"id": N, "skipped": true}`. While a job runs, the runner may also send
`{"progress": N, "value": {...}}` lines for it (`ctx.progress`, throttled here to one per
`progress.SEND_INTERVAL`); they never take the place of the job's one reply, which carries the
artifacts the job finished as `"artifacts": [...]`.
"""

from __future__ import annotations

import json
import os
import select
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from taskq_core import logs
from taskq_core.plugins import Registry
from taskq_core.worker.execution import (
    Instances,
    Job,
    Outcome,
    describe_error,
    unknown_type_error,
)
from taskq_core.worker.reporting import JobReporter

READ_SIZE = 64 * 1024  # bytes per read of a pipe: its default capacity
IDLE_TITLE = "taskq-runner [idle]"  # what `ps` shows between jobs; during one, its id and type


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


def serve(registry: Registry, jobs: int, replies: int) -> None:
    """Run each job read from the `jobs` pipe, answering on the `replies` pipe, until EOF.

    The pipes are the runner's private ones, not stdin and stdout: a task's print() cannot corrupt
    a reply nor its input() swallow the next job. Close-on-exec, so a subprocess a task starts
    cannot hold them open.
    """
    inbox = _Inbox(jobs)
    sending = threading.Lock()  # progress may be sent from a timer thread

    def send(message: dict[str, Any]) -> None:
        data = memoryview(json.dumps(message).encode() + b"\n")
        with sending:
            while data:
                data = data[os.write(replies, data) :]

    instances = Instances()
    while (job := inbox.next()) is not None:
        job_id, message = job
        if message is None:
            send({"id": job_id, "skipped": True})
            continue
        if isinstance(message, dict):
            logs.set_title(
                f"taskq-runner [task {message.get('task_id')} {message.get('task_type')}]"
            )
        outcome = _run_message(registry, instances, message, _progress_sender(send, job_id))
        try:
            send(
                {
                    "id": job_id,
                    "result": outcome.result,
                    "error": outcome.error,
                    "artifacts": outcome.artifacts,
                }
            )
        except (TypeError, ValueError) as exc:
            send({"id": job_id, "result": None, "error": describe_error(exc), "artifacts": []})


def _progress_sender(
    send: Callable[[dict[str, Any]], None], job_id: Any
) -> Callable[[dict[str, Any]], None]:
    def send_progress(value: dict[str, Any]) -> None:
        send({"progress": job_id, "value": value})

    return send_progress


class _Inbox:
    """The parent's messages, read ahead: the jobs to run in order, and those to skip."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._lines = Lines()
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
            # Idle only when nothing is queued: a title costs a few µs, as much as a short job.
            logs.set_title(IDLE_TITLE)
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


def _run_message(
    registry: Registry,
    instances: Instances,
    message: Any,
    send_progress: Callable[[dict[str, Any]], None],
) -> Outcome:
    if isinstance(message, Exception):
        return Outcome(error=describe_error(message))
    try:
        job = Job(**message)
    except TypeError as exc:
        return Outcome(error=describe_error(exc))
    return run_job(registry, instances, job, send_progress)


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
