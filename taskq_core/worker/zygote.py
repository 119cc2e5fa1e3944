"""The runner fork server: forked from the worker (`serve_forked`) or spawned as
`python -m taskq_core.worker.zygote PARENT_PID CONTROL_FD`.

It holds taskq_core and the plugins, loaded once, and forks a runner whenever the worker asks: a new
runner costs a fork, not an interpreter start, its imports and the plugins. The worker forks it
before it starts its event loop, threads or connections (forkserver.fork_early), with the plugins
it loaded; a worker whose loop runs already spawns it as a fresh interpreter, which loads them.

It talks to the worker over CONTROL_FD, a Unix SOCK_SEQPACKET socket, one JSON object per
message. It first sends `{"ready": true}`, or `{"ready": false, "error": ...}` and exits. Each
request from the worker is `fork` (forkserver.FORK) with its runner's file descriptors
(SCM_RIGHTS): the read end of its control pipe, the write end of its event pipe and its slot's
memory (runner.serve). It answers each, in order, with `{"forked": PID}` (or
`{"forked": null, "error": "..."}`), having closed its copies of them first. Forked from the
worker, it first forks a runner on each set of descriptors it inherited for that
(forkserver.Ends), right after `ready`, and answers those the same way, in order, before any
request's. It reports each runner it reaps with `{"exited": PID, "returncode": N}` (N < 0:
killed by signal -N). It exits at EOF.

It dies with the worker's process, and its runners die with it (parent-death signals), so nothing
outlives a worker killed even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, NoReturn

from taskq_core import logs
from taskq_core.plugins import Registry, load_registry
from taskq_core.processes import set_parent_death_signal
from taskq_core.settings import Settings
from taskq_core.worker.execution import describe_error
from taskq_core.worker.forkserver import FORK, Ends
from taskq_core.worker.runner import serve

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s (runner %(process)d): %(message)s"
MAX_ERROR_TEXT = 4000  # characters of a plugin's error message and traceback sent: one message
RUNNER_FDS = 3  # file descriptors a runner comes with


def main(argv: list[str]) -> int:
    """Load the plugins, say ready, then fork a runner for each request until EOF."""
    # A worker killed even by SIGKILL takes us along; if it died before this line, go now.
    set_parent_death_signal(signal.SIGKILL)
    parent, control_fd = int(argv[0]), int(argv[1])
    if os.getppid() != parent:
        return 1
    with socket.socket(fileno=control_fd) as control:
        return _serve(control)


def serve_forked(
    parent: int,
    control: socket.socket,
    registry: Registry,
    env: Mapping[str, str],
    runners: Sequence[Ends],
) -> NoReturn:
    """In the child forked by forkserver.fork_early: fork a runner on each of `runners`, then
    serve as the fork server, then exit (never return into the worker's code). Set up as the
    spawned fork server is: its own session, dead with the worker, stdin /dev/null, stdout the
    worker's stderr, runners given `env`."""
    code = 1
    try:
        for ends in runners:  # the worker's: not ours to hold, nor our runners'
            ends.close_ours()
        # First: setproctitle finds the command line's memory from `environ`, which must not
        # have moved yet (os.environ.update below may move it).
        logs.set_title("taskq-forkserver")
        os.setsid()
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before the line above
            os._exit(1)
        # The worker's, which only note a stop request: ours and the runners' are the defaults.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        os.environ.update(env)
        # The worker turns collections off while it starts, and runners need them: what it
        # built goes to the permanent generation first, else the first collection walks all of
        # it (30 ms, and a copy of every page it touches).
        gc.freeze()
        gc.enable()
        code = _serve(control, lambda: registry, [ends.theirs for ends in runners])
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(code)


def _load() -> Registry:
    # The worker loaded the same plugins and already logged any that failed.
    logging.getLogger("taskq_core.plugins").setLevel(logging.CRITICAL)
    return load_registry()


def _serve(
    control: socket.socket, load: Callable[[], Registry] = _load, early: Sequence[list[int]] = ()
) -> int:
    """Load the plugins, say ready, fork a runner on each of `early`'s descriptors, then one for
    each request until EOF."""
    # The worker started us with stdin /dev/null and stdout our stderr, and runners inherit that:
    # a task's print() or input() cannot touch the runner's pipes.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # a task's prints interleave with its logs
    try:
        settings = Settings()
        logs.setup(settings.log_level, settings.log_format, LOG_FORMAT)
        logs.set_title("taskq-forkserver")
        registry = load()
    except BaseException as exc:  # a plugin calling sys.exit() at import is a failure to report too
        error = describe_error(exc)
        error["message"] = error["message"][:MAX_ERROR_TEXT]
        error["traceback"] = error["traceback"][-MAX_ERROR_TEXT:]
        _send(control, {"ready": False, "error": error})
        return 1
    # What the plugins built lives as long as we do: runners' collections need not walk it, and
    # need not write to its pages, which then stay shared.
    gc.freeze()
    # SIGCHLD only wakes the loop below (through the wake-up pipe), which reaps and reports.
    wake_in, wake_out = os.pipe()
    os.set_blocking(wake_out, False)
    signal.set_wakeup_fd(wake_out)
    signal.signal(signal.SIGCHLD, _wake)
    _send(control, {"ready": True})
    try:
        for position, fds in enumerate(early):
            # The later runners' descriptors are open here still: not this runner's to keep.
            later = [fd for fds_after in early[position + 1 :] for fd in fds_after]
            _fork(control, registry, fds, (wake_in, wake_out), later)
        while True:
            readable, _, _ = select.select([control.fileno(), wake_in], [], [])
            if wake_in in readable:
                os.read(wake_in, 4096)
                _reap(control)
            if control.fileno() in readable:
                message, fds, _, _ = socket.recv_fds(control, 64, 3, socket.MSG_CMSG_CLOEXEC)
                if not message:
                    return 0
                refusal = _refusal(message, fds)
                if refusal is not None:
                    for fd in fds:
                        os.close(fd)
                    _send(control, {"forked": None, "error": refusal})
                    continue
                _fork(control, registry, fds, (wake_in, wake_out))
    except (BrokenPipeError, ConnectionResetError):  # the worker is gone
        return 0


def _refusal(request: bytes, fds: list[int]) -> str | None:
    """Why `request` with `fds` is not a fork request this fork server serves, if it is not."""
    if request != FORK:
        return f"no such request: {request!r}"
    if len(fds) != RUNNER_FDS:
        return f"got {len(fds)} file descriptors, not {RUNNER_FDS}"
    return None


def _wake(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD's handler: there only so that the signal reaches the wake-up pipe."""


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _reap(control: socket.socket) -> None:
    """Report every runner that exited."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _fork(
    control: socket.socket,
    registry: Registry,
    fds: list[int],
    wake: tuple[int, int],
    inherited: Sequence[int] = (),
) -> None:
    """Fork a runner on `fds` (which the child closes `inherited` besides); `fds` are the
    runner's alone before the answer."""
    answer: dict[str, Any]
    try:
        # Else what sits in their buffers would be written once more by every runner.
        sys.stdout.flush()
        sys.stderr.flush()
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            answer = {"forked": None, "error": str(exc)}
        else:
            if pid == 0:
                _runner(zygote, control, registry, fds, [*wake, *inherited])
            answer = {"forked": pid}
    finally:
        # Closed BEFORE the answer: the runner's copies must be the only ones once the worker has
        # it, as its death is EOF on the worker's event pipe. Closed after, a fork server stopped
        # or descheduled in between would keep them open: the worker would see no EOF and, the
        # stuck fork server reporting no exit, never settle the runner.
        for fd in fds:
            os.close(fd)
    _send(control, answer)


def _runner(
    zygote: int,
    control: socket.socket,
    registry: Registry,
    fds: list[int],
    others: list[int],
) -> NoReturn:
    """In the forked child: become a runner, run tasks, exit; never return to the loop.
    `others`: the fork server's descriptors it must not keep."""
    code = 1
    try:
        # Its own session: a terminal's Ctrl-C reaches only the worker, which decides when
        # runners stop, and killing the runner's process group on a timeout also stops any
        # subprocess the task started.
        os.setsid()
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != zygote:  # the fork server died before the request took effect
            os._exit(1)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a task's subprocess.run() must reap
        control.close()
        for fd in others:
            os.close(fd)
        serve(registry, *fds)
        code = 0
    except SystemExit as exc:  # a task called sys.exit(): exit as the interpreter would
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
    finally:
        # os._exit: unwinding would run the fork server's code; so flush what the task printed.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
