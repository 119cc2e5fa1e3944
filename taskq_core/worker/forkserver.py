"""The pool's end of the runner fork server (`zygote`): start it, ask it to fork, learn of exits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from taskq_core.errors import TaskqError

START_TIMEOUT = 60.0  # seconds the fork server may take to import the plugins and say it is ready
FORK_TIMEOUT = 10.0  # seconds a fork may take: a fork server slower than that is stuck
CLOSE_TIMEOUT = 5.0  # seconds close() lets runners finish their jobs before killing them
CONTROL_SIZE = 64 * 1024  # bytes: the longest message the fork server sends


class RunnerError(TaskqError):
    """A task runner process failed."""


def exit_description(code: int | None) -> str:
    if code is None:  # its fork server died before reporting it, and took it along
        return "was stopped when the task runner fork server died"
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class _Exit(asyncio.SubprocessProtocol):
    """Tells when the fork server process has been reaped."""

    def __init__(self) -> None:
        self.exited = asyncio.get_running_loop().create_future()

    def process_exited(self) -> None:
        self.exited.set_result(None)


class ForkServer:
    """The fork server process (taskq_core.worker.zygote, whose docstring has the protocol) and the
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
    ) -> ForkServer:
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
                "taskq_core.worker.zygote",
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
                        f"{exit_description(self.transport.get_returncode())} before it was "
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
