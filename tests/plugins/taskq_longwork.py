"""Task types the suite installs (as `taskq-longwork`) to exercise progress and artifacts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import redis
from pydantic import BaseModel, ConfigDict

from taskq_core import PermanentError, Retry, Task, TaskContext, hookimpl


def gate_key(task_id: int, attempt: int) -> str:
    """The list a gated task waits on (BLPOP) before it finishes; the test pushes to open it."""
    return f"test:gate:{task_id}:{attempt}"


def _wait_gate(ctx: TaskContext) -> None:
    client = redis.Redis.from_url(os.environ["TASKQ_REDIS_URL"])
    try:
        if client.blpop([gate_key(ctx.task_id, ctx.attempt)], timeout=60) is None:
            raise TimeoutError("the test never opened the gate")
    finally:
        client.close()


class ProgressInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reports: int = 1000  # calls to ctx.progress in a tight loop before the last one
    gate: bool = True  # wait for the test before finishing
    fail_first: bool = False  # the first attempt reports, then asks to be retried


class Done(BaseModel):
    reports: int


def _report(data: ProgressInput, ctx: TaskContext) -> None:
    for i in range(data.reports):
        ctx.progress(i, data.reports * 2, f"report {i}")
    ctx.progress(data.reports, data.reports * 2, "halfway")


class ProgressTask(Task):
    name = "ProgressTask"
    description = "Report progress many times, then wait at a gate (sync: in a runner)."
    Input = ProgressInput
    Output = Done
    max_attempts = 3

    def run(self, data: ProgressInput, ctx: TaskContext) -> Done:
        if ctx.attempt > 1 and data.fail_first:
            _wait_gate(ctx)  # the retry reports nothing until the test has looked
        _report(data, ctx)
        if data.fail_first and ctx.attempt == 1:
            raise Retry(after=0, reason="once more")
        if data.gate:
            _wait_gate(ctx)
        return Done(reports=data.reports)


class AsyncProgressTask(Task):
    name = "AsyncProgressTask"
    description = "Report progress many times, then wait at a gate (async: in the worker)."
    Input = ProgressInput
    Output = Done

    async def run(self, data: ProgressInput, ctx: TaskContext) -> Done:
        _report(data, ctx)
        if data.gate:
            await asyncio.to_thread(_wait_gate, ctx)
        return Done(reports=data.reports)


class ArtifactInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "out.bin"
    size: int = 1000  # bytes written, in chunks
    chunk: int = 65536
    content_type: str = "application/octet-stream"
    fail: str | None = None  # "inside": raise while the artifact is open; "after": once closed
    also: str | None = None  # a second artifact's name (a small text file)
    hang: bool = False  # attempt 1 stops writing halfway and sleeps (until it is killed)


class ArtifactOutput(BaseModel):
    written: int


def pattern(size: int) -> bytes:
    """The bytes an ArtifactTask writes: reproducible, and not one byte repeated."""
    unit = bytes(range(251))  # a prime length, so chunk boundaries do not line up with it
    return (unit * (size // len(unit) + 1))[:size]


def _write(data: ArtifactInput, ctx: TaskContext) -> int:
    body = pattern(data.size)
    with ctx.artifact(data.name, data.content_type) as out:
        for start in range(0, len(body), data.chunk):
            out.write(body[start : start + data.chunk])
            if data.fail == "inside" and start + data.chunk >= len(body) // 2:
                raise PermanentError("failed halfway through writing")
            if data.hang and ctx.attempt == 1 and start + data.chunk >= len(body) // 2:
                out.flush()
                time.sleep(60)
    if data.also:
        with ctx.artifact(data.also, "text/plain; charset=utf-8") as note:
            note.write(b"hello\n")
    if data.fail == "after":
        raise PermanentError("failed after writing")
    return len(body)


class ArtifactTask(Task):
    name = "ArtifactTask"
    description = "Write an artifact of `size` bytes (sync: in a runner)."
    Input = ArtifactInput
    Output = ArtifactOutput

    def run(self, data: ArtifactInput, ctx: TaskContext) -> ArtifactOutput:
        return ArtifactOutput(written=_write(data, ctx))


class AsyncArtifactTask(Task):
    name = "AsyncArtifactTask"
    description = "Write an artifact of `size` bytes (async: in the worker)."
    Input = ArtifactInput
    Output = ArtifactOutput

    async def run(self, data: ArtifactInput, ctx: TaskContext) -> ArtifactOutput:
        return ArtifactOutput(written=_write(data, ctx))


class BadNameInput(BaseModel):
    name: str


class BadNameTask(Task):
    name = "BadNameTask"
    description = "Ask for an artifact with the given (bad) name."
    Input = BadNameInput
    Output = Done
    max_attempts = 1

    def run(self, data: BadNameInput, ctx: TaskContext) -> Done:
        with ctx.artifact(data.name, "text/plain") as out:
            out.write(b"never")
        return Done(reports=0)


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    for task_type in (
        ProgressTask,
        AsyncProgressTask,
        ArtifactTask,
        AsyncArtifactTask,
        BadNameTask,
    ):
        register(task_type)
