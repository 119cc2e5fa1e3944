"""Server processes: spawned to die with us, stopped, killed, and reclaimed when left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from taskq_core.embedded.errors import AddressInUseError, EmbeddedError
from taskq_core.processes import alive, die_with_parent, stat_fields

Server = subprocess.Popen[bytes]

READY_TIMEOUT = 30.0  # seconds
STOP_TIMEOUT = 30.0  # seconds
POLL_INTERVAL = 0.02  # seconds
LOG_TAIL_LINES = 20
_LINUX = sys.platform.startswith("linux")


def spawn(
    argv: list[str], log: Path, cwd: Path, deathsig: signal.Signals, user: int | None = None
) -> Server:
    """Run a server in the foreground as our child, logging to `log`, as uid and gid `user`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # Own session: a Ctrl-C in the terminal reaches only us, and we stop them in order.
            start_new_session=True,
            preexec_fn=_deathsig_hook(deathsig),
            user=user,
            group=user,
            extra_groups=None if user is None else [],
        )


def _deathsig_hook(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send `sig` to the child when we die, even by SIGKILL.

    It runs after Popen switched to `user` (a change of uid clears the request, so it is made
    after it); the kernel sends it when the spawning *thread* exits, so spawn servers from a
    long-lived thread (the main one).
    """
    return die_with_parent(sig) if _LINUX else None


Ready = Callable[[int, Server], bool]  # whether this server answers on this port


def wait_ready(proc: Server, name: str, port: int, ready: Ready, log: Path, offset: int) -> None:
    """Poll `ready` until it holds; raise with the log's tail if the server dies or stalls."""
    deadline = time.monotonic() + READY_TIMEOUT
    while proc.poll() is None:
        if ready(port, proc):
            return
        if time.monotonic() > deadline:
            tail = log_tail(log, offset)
            raise EmbeddedError(f"{name} not ready in {READY_TIMEOUT:.0f} s; {log} ends:\n{tail}")
        time.sleep(POLL_INTERVAL)
    tail = log_tail(log, offset)
    error = AddressInUseError if "Address already in use" in tail else EmbeddedError
    raise error(f"{name} exited ({proc.returncode}) on port {port}; {log} ends:\n{tail}")


def send(proc: Server, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def wait_or_kill(proc: Server) -> None:
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(proc)


def kill_group(proc: Server) -> None:
    """SIGKILL a server and every process it forked, and wait until all are gone."""
    if proc.returncode is None:  # once reaped, its pid (the group id) may be another's
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # PostgreSQL refuses to start while a dying backend still holds the old shared memory.
    wait_until(lambda: not _group_alive(proc.pid))


def server_in(pidfile: Path, workdir: Path, names: tuple[str, ...]) -> int | None:
    """The pid in `pidfile` if it is a live server of ours in `workdir`, not a reused pid."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _LINUX or pid <= 1 or pid == os.getpid():
        return None  # without /proc we cannot tell; the server then reports the conflict itself
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
    program = os.path.basename(argv0)  # Valkey rewrites it as "valkey-server 127.0.0.1:PORT"
    ours = any(name in program for name in names) and cwd == workdir.resolve()
    return pid if ours and alive(pid) else None


def reclaim(pidfile: Path, workdir: Path, names: tuple[str, ...], sig: signal.Signals) -> None:
    """Stop a server that a killed run left in `workdir`, so this run can have it."""
    pid = server_in(pidfile, workdir, names)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not wait_until(lambda: not alive(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid))


def wait_until(done: Callable[[], bool], timeout: float = STOP_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _group_alive(pgid: int) -> bool:
    if not _LINUX:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(f"/proc/{entry.name}/stat")
            if fields is not None and int(fields[2]) == pgid and alive(int(entry.name)):
                return True
    return False


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_tail(path: Path, offset: int) -> str:
    """The last lines written to `path` since `offset` (where this start began)."""
    with contextlib.suppress(OSError), path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])
    return ""
