"""Task types the suite installs (as the `taskq-testkit` distribution) to exercise workers."""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Callable

import redis
from pydantic import AwareDatetime, BaseModel, ConfigDict

from taskq_core import Task, TaskContext, hookimpl

RUNS_KEY = "test:runs"  # every execution appends "task_id:attempt:worker_id" here
# When set, every execution also appends that line to this file when it starts (it survives
# Redis being flushed or restarted, which the fault-injection tests do).
RUNS_FILE_ENV = "TASKQ_TEST_RUNS_FILE"


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StrictInput(BaseModel):
    """Inputs take exactly the types their JSON Schema in /openapi.json says (`false` is not 0
    seconds, nor `"3"` a code); Schemathesis checks that it holds."""

    model_config = ConfigDict(strict=True)


class SleepInput(StrictInput):
    seconds: float = 0.0


class SleepOutput(BaseModel):
    slept: float


def _record(ctx: TaskContext) -> None:
    line = f"{ctx.task_id}:{ctx.attempt}:{ctx.worker_id}"
    client = redis.Redis.from_url(os.environ["TASKQ_REDIS_URL"])
    client.rpush(RUNS_KEY, line)
    client.close()


def _started(ctx: TaskContext) -> None:
    path = os.environ.get(RUNS_FILE_ENV)
    if path:
        with open(path, "a") as log:  # one short write in append mode: lines never interleave
            log.write(f"{ctx.task_id}:{ctx.attempt}:{ctx.worker_id}\n")


class AsyncSleepTask(Task):
    name = "AsyncSleepTask"
    description = "Sleep in the event loop, then record the run."
    Input = SleepInput
    Output = SleepOutput
    priority = 2

    async def run(self, data: SleepInput, ctx: TaskContext) -> SleepOutput:
        _started(ctx)
        await asyncio.sleep(data.seconds)
        await asyncio.to_thread(_record, ctx)
        return SleepOutput(slept=data.seconds)


class BlockingSleepTask(Task):
    name = "BlockingSleepTask"
    description = "Block its thread with time.sleep, then record the run."
    Input = SleepInput
    Output = SleepOutput

    def run(self, data: SleepInput, ctx: TaskContext) -> SleepOutput:
        _started(ctx)
        time.sleep(data.seconds)
        _record(ctx)
        return SleepOutput(slept=data.seconds)


class FailInput(StrictInput):
    message: str = "boom"


class FailTask(Task):
    name = "FailTask"
    description = "Always raises ValueError."
    Input = FailInput
    Output = Empty
    retry_backoff_base = 0.05  # seconds: retries come quickly in tests

    def run(self, data: FailInput, ctx: TaskContext) -> Empty:
        _started(ctx)
        raise ValueError(data.message)


class BadOutputTask(Task):
    name = "BadOutputTask"
    description = "Returns something its Output model rejects."
    Input = Empty
    Output = SleepOutput

    def run(self, data: Empty, ctx: TaskContext) -> dict[str, object]:
        return {"slept": "not a number"}


class SpinInput(StrictInput):
    seconds: float = 0.0


class PidOutput(BaseModel):
    pid: int


class SpinTask(Task):
    name = "SpinTask"
    description = "Keep a CPU busy in pure Python (never releasing control) for `seconds`."
    Input = SpinInput
    Output = PidOutput

    def run(self, data: SpinInput, ctx: TaskContext) -> PidOutput:
        deadline = time.monotonic() + data.seconds
        while time.monotonic() < deadline:
            pass
        return PidOutput(pid=os.getpid())


class CrashInput(StrictInput):
    code: int = 3


class CrashTask(Task):
    name = "CrashTask"
    description = "End its process abruptly, as a segfault or the OOM killer would."
    Input = CrashInput
    Output = Empty

    def run(self, data: CrashInput, ctx: TaskContext) -> Empty:
        os._exit(data.code)


class PrintOutput(BaseModel):
    pid: int
    stdin: str


class PrintTask(Task):
    name = "PrintTask"
    description = "Print to stdout and read a line from stdin, which a runner must survive."
    Input = Empty
    Output = PrintOutput

    def run(self, data: Empty, ctx: TaskContext) -> PrintOutput:
        import sys

        print("a line a task printed", flush=True)
        print('{"result": null, "error": null}')  # looks like a reply; must not be taken for one
        # In a runner stdin is /dev/null, not the pipe the jobs come through.
        return PrintOutput(pid=os.getpid(), stdin=sys.stdin.readline())


class RetryInput(StrictInput):
    after: float = 5.0
    succeed_on_attempt: int | None = None  # None: always ask for a retry


class RetryTask(Task):
    name = "RetryTask"
    description = "Ask to be retried after `after` seconds, until `succeed_on_attempt`."
    Input = RetryInput
    Output = Empty

    def run(self, data: RetryInput, ctx: TaskContext) -> Empty:
        from taskq_core import Retry

        _started(ctx)
        if data.succeed_on_attempt is not None and ctx.attempt >= data.succeed_on_attempt:
            return Empty()
        raise Retry(after=data.after, reason="the upstream is busy")


class PermanentTask(Task):
    name = "PermanentTask"
    description = "Fail in a way no retry can fix."
    Input = Empty
    Output = Empty

    def run(self, data: Empty, ctx: TaskContext) -> Empty:
        from taskq_core import PermanentError

        raise PermanentError("the account does not exist")


class SpawnInput(StrictInput):
    pid_file: str


class SpawnTask(Task):
    name = "SpawnTask"
    description = "Start a long `sleep` subprocess, write its pid to `pid_file`, wait for it."
    Input = SpawnInput
    Output = Empty

    def run(self, data: SpawnInput, ctx: TaskContext) -> Empty:
        import subprocess

        child = subprocess.Popen(["sleep", "60"])
        with open(data.pid_file, "w") as out:
            out.write(str(child.pid))
        child.wait()
        return Empty()


class FibInput(StrictInput):
    n: int = 20


class FibOutput(BaseModel):
    result: int


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


class Fib20Task(Task):
    name = "Fib20Task"
    description = "The naive exponential recursion, fib(20) by default: a CPU-bound task."
    Input = FibInput
    Output = FibOutput

    def run(self, data: FibInput, ctx: TaskContext) -> FibOutput:
        return FibOutput(result=_fib(data.n))


class AppendInput(StrictInput):
    path: str
    line: str
    seconds: float = 0.0  # then spin this long


class AppendTask(Task):
    name = "AppendTask"
    description = "Append `line` to the file at `path` (to count executions), then spin."
    Input = AppendInput
    Output = PidOutput

    def run(self, data: AppendInput, ctx: TaskContext) -> PidOutput:
        with open(data.path, "a") as out:  # one short write in append mode: lines never interleave
            out.write(data.line + "\n")
        deadline = time.monotonic() + data.seconds
        while time.monotonic() < deadline:
            pass
        return PidOutput(pid=os.getpid())


class NulInput(StrictInput):
    where: str = "result"  # "result" or "error": where the NUL character goes


class TextOutput(BaseModel):
    text: str


class NulTask(Task):
    name = "NulTask"
    description = (
        "Return a result, or raise an error, holding a NUL (PostgreSQL's JSON refuses it)."
    )
    Input = NulInput
    Output = TextOutput

    async def run(self, data: NulInput, ctx: TaskContext) -> TextOutput:
        _started(ctx)
        if data.where == "error":
            raise ValueError("before\x00after")
        return TextOutput(text="before\x00after")


class Unshowable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be shown")


class UnshowableErrorTask(Task):
    name = "UnshowableErrorTask"
    description = "Raise an exception whose str() raises: the worker's error handling breaks."
    Input = Empty
    Output = Empty

    async def run(self, data: Empty, ctx: TaskContext) -> Empty:
        _started(ctx)
        raise Unshowable()


class HugeResultTask(Task):
    name = "HugeResultTask"
    description = "Return a 2 MiB result: over what the worker stores (worker/execution.py)."
    Input = Empty
    Output = TextOutput

    def run(self, data: Empty, ctx: TaskContext) -> TextOutput:
        return TextOutput(text="x" * (2 * 1024 * 1024))


class Unit(enum.Enum):
    SECONDS = "s"
    MINUTES = "min"


class WhenInput(StrictInput):
    """Fields JSON carries as strings and arrays: strict Python would take only a datetime, a
    Unit and a tuple, which no JSON request holds."""

    at: AwareDatetime
    unit: Unit = Unit.SECONDS
    window: tuple[int, int] = (0, 60)


class WhenOutput(BaseModel):
    at: str
    unit: str
    window: list[int]


class WhenTask(Task):
    name = "WhenTask"
    description = "Echo an instant, a unit and a window, as the task received them."
    Input = WhenInput
    Output = WhenOutput

    async def run(self, data: WhenInput, ctx: TaskContext) -> WhenOutput:
        return WhenOutput(at=data.at.isoformat(), unit=data.unit.value, window=list(data.window))


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    for task_type in (
        AsyncSleepTask,
        BlockingSleepTask,
        FailTask,
        BadOutputTask,
        SpinTask,
        CrashTask,
        PrintTask,
        RetryTask,
        PermanentTask,
        SpawnTask,
        Fib20Task,
        AppendTask,
        NulTask,
        UnshowableErrorTask,
        HugeResultTask,
        WhenTask,
    ):
        register(task_type)
