"""Runner processes for sync task types, one task at a time each, and the pool a worker uses."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from taskq_core.errors import TaskqError
from taskq_core.execution import Instances, Job, Outcome, describe_error, unknown_type_error
from taskq_core.plugins import Registry, load_registry
from taskq_core.processes import set_parent_death_signal
from taskq_core.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds a new runner may take to import the plugins and say it is ready
CLOSE_TIMEOUT = 5.0  # seconds close() lets runners finish their job before killing them
RESTART_DELAY = 1.0  # seconds between attempts to replace a runner that would not start
MAX_REPLY = 64 * 1024 * 1024  # bytes: the longest reply line (one task's result) accepted
_JOB_FIELDS = tuple(f.name for f in fields(Job))  # dataclasses.asdict deep-copies: 10x slower
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s (runner %(process)d): %(message)s"


class RunnerError(TaskqError):
    """A task runner process failed."""


# ---- the child: `python -m taskq_core.runner PARENT_PID` -------------------------------------


def main(argv: list[str]) -> int:
    """Load the plugins, say ready, then run each job read from stdin until EOF."""
    # A worker killed even by SIGKILL takes its runners along; if it died before this line, go now.
    set_parent_death_signal(signal.SIGKILL)
    if argv and os.getppid() != int(argv[0]):
        return 1
    # The protocol gets private copies of stdin and stdout; fd 0 becomes /dev/null and fd 1 our
    # stderr, so a task's print() cannot corrupt a reply nor its input() swallow the next job.
    # os.dup's copies are not inherited, so a subprocess a task starts cannot hold the pipes open.
    jobs = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # a task's prints interleave with its logs

    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    try:
        logging.basicConfig(level=Settings().log_level.upper(), format=LOG_FORMAT)
        # The worker loaded the same plugins and already logged any that failed.
        logging.getLogger("taskq_core.plugins").setLevel(logging.CRITICAL)
        registry = load_registry()
    except BaseException as exc:  # a plugin calling sys.exit() at import is a failure to report too
        send({"ready": False, "error": describe_error(exc)})
        return 1
    send({"ready": True, "pid": os.getpid()})
    instances = Instances()
    for line in jobs:
        outcome = _run_line(registry, instances, line)
        try:
            send({"result": outcome.result, "error": outcome.error})
        except (TypeError, ValueError) as exc:
            send({"result": None, "error": describe_error(exc)})
    return 0


def _run_line(registry: Registry, instances: Instances, line: bytes) -> Outcome:
    try:
        job = Job(**json.loads(line))
    except (TypeError, ValueError) as exc:
        return Outcome(error=describe_error(exc))
    task_type = registry.types.get(job.task_type)
    if task_type is None:
        return Outcome(error=unknown_type_error(registry, job.task_type))
    if task_type.is_async:
        message = f"{job.task_type} is async: it runs in the worker's event loop, not in a runner"
        return Outcome(error={"type": "RunnerError", "message": message, "traceback": ""})
    return instances.run_sync(task_type, job)


# ---- the parent: a pool of runners -----------------------------------------------------------


class _Runner:
    """One runner process and its pipes."""

    __slots__ = ("proc", "stdin", "stdout")

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    def kill(self) -> None:
        """SIGKILL the runner's process group: the runner and any subprocess its task started."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.stdin.close()


def _error(kind: str, message: str) -> Outcome:
    return Outcome(error={"type": kind, "message": message, "traceback": ""})


def _exit_description(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class RunnerPool:
    """`size` runner processes; `run` hands each job to an idle one, first come first served.

    A runner that times out, is cancelled or dies is SIGKILLed and replaced in the background.
    """

    def __init__(self, size: int, *, env: Mapping[str, str] | None = None) -> None:
        if size < 1:
            raise ValueError(f"a runner pool needs at least one runner, not {size}")
        self._size = size
        self._env = dict(env) if env is not None else None
        self._idle: deque[_Runner] = deque()
        self._waiters: deque[asyncio.Future[_Runner]] = deque()
        self._runners: set[_Runner] = set()  # every runner not yet reaped: idle, busy or dying
        self._restarts: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        """How many runners wait for a job."""
        return len(self._idle)

    @property
    def pids(self) -> list[int]:
        """The process ids of the runners not yet reaped."""
        return sorted(r.proc.pid for r in self._runners)

    async def start(self) -> None:
        """Start the runners, wait until each has loaded the plugins; RunnerError if one can't."""
        if self._runners or self._closed:
            raise RunnerError("the runner pool was already started")
        started = await asyncio.gather(
            *(self._spawn() for _ in range(self._size)), return_exceptions=True
        )
        failures = [r for r in started if isinstance(r, BaseException)]
        if failures:
            await self.close()
            raise failures[0]
        for runner in started:
            assert isinstance(runner, _Runner)
            self._release(runner)

    # A task timeout is not the caller's asyncio timeout: it kills the runner and is an outcome.
    async def run(self, job: Job, timeout: float | None) -> Outcome:  # noqa: ASYNC109
        """Run `job` in the next idle runner; stop it after `timeout` seconds (None: no limit)."""
        line = json.dumps({name: getattr(job, name) for name in _JOB_FIELDS}).encode() + b"\n"
        runner = await self._send(line)
        try:
            async with asyncio.timeout(timeout):
                reply = await runner.stdout.readline()
        except TimeoutError:
            self._replace(runner)
            return _error(
                "TaskTimeoutError", f"task exceeded its timeout of {timeout:g}s and was stopped"
            )
        except asyncio.CancelledError:
            self._replace(runner)
            raise
        except ValueError:  # the reply outgrew MAX_REPLY
            self._replace(runner)
            too_big = f"the task's result is larger than {MAX_REPLY // 2**20} MiB"
            return _error("RunnerError", too_big)
        if not reply.endswith(b"\n"):  # EOF, maybe after part of a reply: the runner died
            self._replace(runner)
            code = await runner.proc.wait()
            return _error(
                "RunnerCrashedError", f"the process running the task {_exit_description(code)}"
            )
        try:
            data = json.loads(reply)
            outcome = Outcome(result=data["result"], error=data["error"])
        except (ValueError, TypeError, KeyError) as exc:
            self._replace(runner)
            return _error("RunnerError", f"the process running the task sent a bad reply: {exc}")
        self._release(runner)
        return outcome

    async def close(self, grace: float = CLOSE_TIMEOUT) -> None:
        """Send each runner EOF, give them `grace` seconds to finish their job, kill the rest."""
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RunnerError("the runner pool is closed"))
        self._waiters.clear()
        self._idle.clear()
        for task in self._restarts:
            task.cancel()
        runners = list(self._runners)
        for runner in runners:
            runner.stdin.close()  # EOF: an idle runner exits now, a busy one after its job
        if runners:
            waits = [asyncio.ensure_future(r.proc.wait()) for r in runners]
            await asyncio.wait(waits, timeout=grace)
            for runner in runners:
                runner.kill()
            await asyncio.gather(*waits)
        await asyncio.gather(*self._restarts, return_exceptions=True)
        self._runners.clear()

    # ---- internals

    async def _spawn(self) -> _Runner:
        """Start one runner and wait for its ready message."""
        # Forked by the event loop's thread: the parent-death signal fires when that thread ends,
        # so the pool must live in a loop that runs for the life of the worker process.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taskq_core.runner",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
            limit=MAX_REPLY,
            # Its own session rather than ignoring SIGINT: a terminal's Ctrl-C reaches only the
            # worker, which decides when runners stop, and killing the runner's process group on a
            # timeout also stops any subprocess the task started.
            start_new_session=True,
        )
        runner = _Runner(proc)
        self._runners.add(runner)
        try:
            await self._handshake(runner)
        except BaseException:
            await self._discard(runner)
            raise
        return runner

    async def _handshake(self, runner: _Runner) -> None:
        """Wait for the runner's ready message; RunnerError saying why it never came."""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while line := await runner.stdout.readline():
                    try:
                        message = json.loads(line)
                    except ValueError:
                        message = None
                    if isinstance(message, dict) and "ready" in message:
                        break
                    # Printed at interpreter start (a .pth file, sitecustomize), before the
                    # runner took its stdout for the protocol: show it where the runner's own
                    # output goes.
                    sys.stderr.write(line.decode(errors="replace"))
                else:
                    code = await runner.proc.wait()
                    raise RunnerError(
                        f"a task runner {_exit_description(code)} before it was ready "
                        "(its error output is above, in this process's stderr)"
                    )
        except TimeoutError:
            raise RunnerError(f"a task runner was not ready within {START_TIMEOUT:g}s") from None
        if message["ready"] is not True:
            error = message.get("error") or {}
            raise RunnerError(
                f"a task runner could not load the plugins: {error.get('type')}: "
                f"{error.get('message')}\n{str(error.get('traceback', ''))[-4000:]}"
            )

    async def _discard(self, runner: _Runner) -> None:
        runner.kill()
        await runner.proc.wait()
        self._runners.discard(runner)

    async def _send(self, line: bytes) -> _Runner:
        """Write `line` to the next idle runner and return it."""
        while True:
            runner = await self._acquire()
            try:
                runner.stdin.write(line)
                await runner.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                # It died while idle (the OOM killer, an operator's kill) and never got the job.
                self._replace(runner)
                continue
            except asyncio.CancelledError:
                self._replace(runner)
                raise
            return runner

    async def _acquire(self) -> _Runner:
        if self._closed:
            raise RunnerError("the runner pool is closed")
        if self._idle:
            return self._idle.popleft()
        waiter: asyncio.Future[_Runner] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed a runner just as we were cancelled: pass it on, or it is lost.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            raise

    def _release(self, runner: _Runner) -> None:
        if self._closed:
            return
        # Hand the runner straight to the longest waiter, so no newcomer can overtake it.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(runner)
                return
        self._idle.append(runner)

    def _replace(self, runner: _Runner) -> None:
        """Kill `runner` now; reap it and start its successor in the background."""
        runner.kill()
        task = asyncio.create_task(self._restart(runner))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, old: _Runner) -> None:
        await self._discard(old)
        while not self._closed:
            try:
                runner = await self._spawn()
            except Exception as exc:
                log.error("could not start a task runner; retrying in %gs: %s", RESTART_DELAY, exc)
                await asyncio.sleep(RESTART_DELAY)
                continue
            if self._closed:  # close() ran while it started
                await self._discard(runner)
                return
            self._release(runner)
            return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
