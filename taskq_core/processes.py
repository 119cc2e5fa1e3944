"""Child processes that die with their parent: the servers, API and workers a command starts."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Loaded once, in the parent: a preexec_fn runs between fork and exec, where loading a library
# (and the allocation it needs) is not safe in a threaded parent.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send `sig` to this process when its parent exits (no-op elsewhere).

    The kernel ties this to the *thread* that forked us, so spawn from a long-lived thread.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def die_with_parent(sig: int, then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A preexec_fn: `sig` when the parent dies, exit at once if it already has; then `then`."""
    parent = os.getpid()

    def run() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)
        if then is not None:
            then()

    return run


def spawn(
    args: Sequence[str],
    *,
    death_signal: int = signal.SIGTERM,
    env: Mapping[str, str] | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    new_session: bool = True,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start `args` as a child that gets `death_signal` if we die, even by SIGKILL.

    In its own session by default, so a terminal's Ctrl-C reaches only us and we stop children in
    order, instead of every process at once.
    """
    return subprocess.Popen(
        list(args),
        env=dict(env) if env is not None else None,
        stdout=stdout,
        stderr=stderr,
        start_new_session=new_session,
        preexec_fn=die_with_parent(death_signal, popen.pop("preexec_fn", None)),
        **popen,
    )


def terminate(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM every process, wait up to `timeout` for all, then SIGKILL the rest."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    """The command line running `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env(database_url: str, redis_url: str) -> dict[str, str]:
    """This process's environment with the given servers configured."""
    env = dict(os.environ)
    env["TASKQ_DATABASE_URL"] = database_url
    env["TASKQ_REDIS_URL"] = redis_url
    return env


def stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc/.../stat file after the command name, or None once it is gone."""
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, its parent yet to collect it) does not."""
    if not sys.platform.startswith("linux"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    # A killed server's main thread turns zombie while its other threads still close its
    # sockets: only once all are dead is its port free.
    for tid in threads:
        fields = stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if fields is not None and fields[0] not in "ZX":
            return True
    return False
