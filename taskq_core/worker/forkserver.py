"""The worker's end of the runner fork server (`zygote`): start it, ask it to fork, learn of exits.

A fork server comes one of two ways. `fork_early` forks it from the worker process itself, after
the worker has loaded the plugins and before it starts an event loop, a thread or a connection:
the fork server then costs a fork instead of a second interpreter importing taskq and the plugins
again (0.3 s of CPU, on the path of a worker scaled from zero), and it forks the first runners at
once, their pipes and slots made and their config written beforehand, so they pop and claim
while the worker is still starting its loop. `ForkServer.start` spawns one as
`python -m taskq_core.worker.zygote`: what a process that already runs an event loop does, such
as a worker replacing a fork server that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskq_core.errors import TaskqError
from taskq_core.worker.runner import Config
from taskq_core.worker.slot import Slot

if TYPE_CHECKING:
    from taskq_core.plugins import Registry

log = logging.getLogger("taskq.worker")

START_TIMEOUT = 60.0  # seconds the fork server may take to import the plugins and say it is ready
FORK_TIMEOUT = 10.0  # seconds a fork may take: a fork server slower than that is stuck
CLOSE_TIMEOUT = 5.0  # seconds stop() lets the fork server exit before killing it
CONTROL_SIZE = 64 * 1024  # bytes: the longest message the fork server sends
FORK = b"fork"  # a fork request (zygote._fork): a runner on the file descriptors sent with it

Exited = asyncio.Future[int | None]  # a process's exit status to come (None: unknown)
Answer = asyncio.Future[tuple[int, Exited]]  # a fork's answer to come: the runner's pid, its exit


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


class Ends:
    """A runner's pipes and slot, made before it is forked: the worker's ends (the event pipe's
    read end, the slot) and the runner's (`theirs`: its control pipe's read end, already holding
    its config line, the event pipe's write end and its own descriptor of the slot)."""

    def __init__(self, config: Config) -> None:
        control_in, control_out = os.pipe()
        try:
            os.write(control_out, config.line())  # far below a pipe's capacity: never blocks
        finally:
            os.close(control_out)
        self.events, events_out = os.pipe()
        self.slot = Slot.create()
        self.slot.alive()  # the runner's first look at its supervisor counts from now
        self.theirs = [control_in, events_out, os.dup(self.slot.fd)]

    def close_theirs(self) -> None:
        """The runner has its copies (or never will): close these."""
        for fd in self.theirs:
            os.close(fd)
        self.theirs = []

    def close_ours(self) -> None:
        """Close the worker's ends: the runner was never forked, or this is the fork server."""
        os.close(self.events)
        self.slot.close()

    def close(self) -> None:
        self.close_theirs()
        self.close_ours()


@dataclass(frozen=True)
class Forked:
    """A fork server forked by `fork_early`, for the worker to adopt once its event loop runs,
    and the runners it forked at once (their `{"forked": pid}` answers come first)."""

    pid: int
    control: socket.socket
    runners: list[Ends]


def fork_early(
    registry: Registry, env: Mapping[str, str], runners: Sequence[Ends] = ()
) -> Forked | None:
    """Fork the fork server from this process, which has loaded `registry`'s plugins; its runners
    get `env`, and it forks one on each of `runners` at once. None if this process runs a second
    thread already (a plugin started one): a fork would copy that thread's locks in whatever state
    they are, so the worker spawns one instead (the caller then closes `runners`)."""
    if threading.active_count() > 1:
        return None
    from taskq_core.worker import zygote

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
        zygote.serve_forked(parent, theirs, registry, env, runners)
    theirs.close()
    for ends in runners:
        ends.close_theirs()
    return Forked(pid, ours, list(runners))


class _Exit(asyncio.SubprocessProtocol):
    """Tells when the spawned fork server process has been reaped, and its exit code."""

    def __init__(self) -> None:
        self.exited: Exited = asyncio.get_running_loop().create_future()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def process_exited(self) -> None:
        assert self.transport is not None
        self.exited.set_result(self.transport.get_returncode())


class ForkServer:
    """The fork server process (taskq_core.worker.zygote, whose docstring has the protocol) and the
    worker's end of its control socket."""

    def __init__(
        self,
        pid: int,
        exited: Exited,
        control: socket.socket,
        kill: Callable[[], None],
    ) -> None:
        """`exited`: its exit code once reaped; `kill`: SIGKILL it (called only before that)."""
        loop = exited.get_loop()
        self.pid = pid
        self.exited = exited  # never await it bare: cancelling the waiter would cancel it
        self._kill = kill
        self.control = control
        self.ready: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self.forks: deque[Answer] = deque()
        self.early: list[Answer] = []
        self.runners: dict[int, Exited] = {}  # exit statuses to come
        self.gone = False  # its control socket is closed: it forks no more
        self.on_lost: Callable[[], None] | None = None  # called if it dies while in use
        control.setblocking(False)
        loop.add_reader(control.fileno(), self._on_readable)

    @classmethod
    async def adopt(cls, forked: Forked) -> ForkServer:
        """Take over the fork server `fork_early` forked from this process, once it is ready."""
        loop = asyncio.get_running_loop()
        exited: Exited = loop.create_future()
        # Our own child: a pidfd turns readable when it exits (at once if it did already), and
        # only this reaps it, so its pid cannot be reused before `kill` stops being called.
        pidfd = os.pidfd_open(forked.pid)

        def reap() -> None:
            pid, status = os.waitpid(forked.pid, os.WNOHANG)
            if pid == 0:
                return
            loop.remove_reader(pidfd)
            os.close(pidfd)
            exited.set_result(os.waitstatus_to_exitcode(status))

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(forked.pid, signal.SIGKILL)

        loop.add_reader(pidfd, reap)
        zygote = cls(forked.pid, exited, forked.control, kill)
        # Its answers for the runners it forked at once come before any requested fork's.
        zygote.early = [loop.create_future() for _ in forked.runners]
        zygote.forks.extend(zygote.early)
        await zygote._ready()
        return zygote

    @classmethod
    async def start(cls, env: Mapping[str, str] | None) -> ForkServer:
        """Spawn a fork server and wait until it has loaded the plugins; RunnerError if it
        can't."""
        loop = asyncio.get_running_loop()
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Forked by the event loop's thread: the parent-death signal fires when that thread
            # ends, so the runners must live in a loop that runs for the life of the worker process.
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
        protocol.exited.add_done_callback(lambda _: transport.close())
        zygote = cls(transport.get_pid(), protocol.exited, control, transport.kill)
        await zygote._ready()
        return zygote

    async def _ready(self) -> None:
        try:
            await self._handshake()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _handshake(self) -> None:
        """Wait for the ready message; RunnerError saying why it never came."""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                message = await asyncio.shield(self.ready)
                if message is None:
                    await asyncio.shield(self.exited)
                    raise RunnerError(
                        "the task runner fork server "
                        f"{exit_description(self.exited.result())} before it was "
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

    async def fork(self, fds: list[int]) -> tuple[int, Exited]:
        """Fork a runner on these file descriptors (see zygote): its pid, and its exit status to
        come."""
        if self.gone:
            raise RunnerError("the task runner fork server died")
        try:
            socket.send_fds(self.control, [FORK], fds)
        except OSError as exc:
            raise RunnerError(f"could not reach the task runner fork server: {exc}") from exc
        forked: Answer = asyncio.get_running_loop().create_future()
        self.forks.append(forked)
        return await self.answer(forked)

    async def answer(self, forked: Answer) -> tuple[int, Exited]:
        """The answer to a fork, requested or early: the runner's pid and exit status to come."""
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
            self._kill()

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
        if forked.done():  # cancelled: the runner finds its control pipe closed and exits
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


# A runner the early fork server forked at once: its ends, and the fork server's answer to come.
Early = tuple[Ends, Answer]


class Forker:
    """The fork server a set of runners comes from, kept up: the early one (`fork_early`) adopted
    on first use, else one spawned; after one dies, the next fork spawns another."""

    def __init__(
        self, env: Mapping[str, str] | None, on_lost: Callable[[ForkServer], None]
    ) -> None:
        """`env`: the runners' environment; `on_lost(server)`: a fork server died while in use
        (its runners died with it)."""
        self._env = dict(env) if env is not None else None
        self._early: Forked | None = None  # until adopted: each later fork server is spawned
        self._early_runners: list[Early] = []  # the early one's runners, until taken
        self._zygote: asyncio.Task[ForkServer] | None = None  # the running one, or one starting
        self._on_lost = on_lost

    def fork_early(self, registry: Registry, runners: Sequence[Ends]) -> bool:
        """Fork the fork server now (see fork_early), and it a runner on each of `runners`;
        False if it cannot (its first use spawns one, and `runners` are the caller's to close)."""
        self._early = fork_early(registry, self._env or {}, runners)
        return self._early is not None

    def take_early(self) -> list[Early]:
        """The runners the adopted early fork server forked at once, for the caller to await."""
        early, self._early_runners = self._early_runners, []
        return early

    def server(self) -> asyncio.Task[ForkServer]:
        """The fork server: the running one, or one starting, or else a new one."""
        if self._zygote is None:
            self._zygote = asyncio.create_task(self._start())
        return self._zygote

    async def fork(self, fds: list[int]) -> tuple[int, Exited]:
        """Fork a runner on `fds` (see ForkServer.fork)."""
        zygote = await asyncio.shield(self.server())  # shared by concurrent forks
        return await zygote.fork(fds)

    def drop_early(self) -> None:
        """Never adopted: the early fork server exits at EOF, and its runners with it."""
        if self._early is not None:
            self._early.control.close()
            for ends in self._early.runners:
                ends.close_ours()
            self._early = None
        for ends, _ in self.take_early():
            ends.close_ours()

    async def stop(self) -> None:
        """Stop the fork server (last: it reports the runners' exits until they are gone)."""
        self.drop_early()
        if self._zygote is not None:
            self._zygote.cancel()  # if it is still starting
            zygote = (await asyncio.gather(self._zygote, return_exceptions=True))[0]
            self._zygote = None
            if isinstance(zygote, ForkServer):
                await zygote.stop()

    async def _start(self) -> ForkServer:
        early, self._early = self._early, None
        try:
            zygote = await self._adopt(early) if early is not None else None
            if zygote is None:
                zygote = await ForkServer.start(self._env)
        except BaseException:
            self._zygote = None  # the next fork tries again
            raise
        zygote.on_lost = functools.partial(self._lost, zygote)
        if zygote.gone:  # it died during its handshake, having said it was ready
            self._lost(zygote)
        return zygote

    async def _adopt(self, early: Forked) -> ForkServer | None:
        """The early fork server, adopted; None if it died before it was ready (a fork server
        spawned then takes its place: the plugins loaded in this process once already)."""
        try:
            zygote = await ForkServer.adopt(early)
        except RunnerError as exc:
            for ends in early.runners:
                ends.close_ours()
            log.warning("%s; starting another", exc)
            return None
        except BaseException:
            for ends in early.runners:
                ends.close_ours()
            raise
        self._early_runners = list(zip(early.runners, zygote.early, strict=True))
        return zygote

    def _lost(self, zygote: ForkServer) -> None:
        self._zygote = None  # the next fork starts another
        self._on_lost(zygote)
