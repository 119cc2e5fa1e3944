"""What a running job reports through its context: progress (throttled) and artifacts (written to
the store, published with a completed outcome, deleted with a failed one)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from taskq_core import artifacts
from taskq_core.progress import Throttle, progress_value
from taskq_core.records import AttemptOutcome, ClaimedTask, Finish, TaskStatus
from taskq_core.settings import Settings
from taskq_core.worker.execution import Job, Outcome, describe_error

log = logging.getLogger("taskq.worker")


@functools.cache
def store_url() -> str:
    """This process's artifact store, from TASKQ_ARTIFACTS_URL or the data folder's default."""
    return artifacts.configured_url(Settings())


class JobReporter:
    """The `TaskContext.reporter` of one job. `send` passes a progress value on: in a runner it
    writes to the pipe, so there it is throttled (`threaded`: a timer thread sends the last value
    of a burst); in the worker's own loop it goes straight to the progress board."""

    def __init__(
        self, job: Job, send: Callable[[dict[str, Any]], None], *, threaded: bool = False
    ) -> None:
        self._send = send
        self._throttle = Throttle() if threaded else None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._ended = False
        self.artifacts = artifacts.AttemptArtifacts(store_url, job.task_id, job.attempt)
        self._task_id, self._attempt = job.task_id, job.attempt

    def progress(self, done: float, total: float | None, message: str | None) -> None:
        value = progress_value(done, total, message)
        throttle = self._throttle
        if throttle is None:
            self._send(value)
            return
        with self._lock:
            if self._ended:
                return
            now = throttle.offer(value)
            if now is None:
                if self._timer is None:
                    self._timer = threading.Timer(throttle.due_in(), self._flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._send(now)

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            if self._ended or self._throttle is None:
                return
            value = self._throttle.take()
            if value is not None:
                self._send(value)  # under the lock: end() waits for it, so it precedes the reply

    def end(self) -> None:
        """The job's run returned: send the last progress now; none comes after."""
        with self._lock:
            self._ended = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            value = self._throttle.take() if self._throttle is not None else None
            if value is not None:
                self._send(value)

    def artifact(self, name: str, content_type: str) -> BinaryIO:
        return self.artifacts.open(name, content_type)

    def settle(self, outcome: Outcome) -> Outcome:
        """The outcome with the artifacts to publish if it completed; else they are deleted."""
        if outcome.error is None:
            try:
                published = self.artifacts.published()
            except Exception as exc:  # finishing a writer left open failed (storage)
                self.artifacts.discard()
                return Outcome(error=describe_error(exc))
            if self._attempt > 1:
                # Earlier attempts of a task that died mid-write left files nobody will publish.
                for earlier in range(1, self._attempt):
                    self.artifacts.delete_other(artifacts.attempt_prefix(self._task_id, earlier))
            return dataclasses.replace(outcome, artifacts=published)
        self.artifacts.discard()
        return outcome


def discard_attempt(job: Job) -> None:
    """Delete what a killed runner's job wrote (best effort: what remains goes with the task)."""
    prefix = artifacts.attempt_prefix(job.task_id, job.attempt)
    try:
        artifacts.ArtifactStore(store_url()).delete_prefix(prefix)
    except Exception as exc:
        log.warning("deleting %s failed (it goes with its task): %r", prefix, exc)


def log_attempt(task: ClaimedTask, finish: Finish, seconds: float, recorded: bool) -> None:
    """The one line logged per attempt, once its outcome is written (or refused: `recorded`);
    its fields are also in JSON logs (TASKQ_LOG_FORMAT=json)."""
    handed_back = finish.outcome == AttemptOutcome.HANDED_BACK
    detail = ""
    if finish.error is not None:
        detail = f": {finish.error['type']}: {finish.error['message']}"
    if finish.status == TaskStatus.PENDING and not handed_back:
        detail += f" (retry in {finish.retry_in:.1f}s)"
    if not recorded:
        detail += " (not recorded: the task was no longer this worker's)"
    elapsed_ms = seconds * 1000
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
