"""The processes a session starts: each in its own group, logged, and stopped completely."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT = 15.0  # seconds a process group gets after SIGTERM before SIGKILL
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the thread that started it exits."""
    # A bench killed by its timeout or by Ctrl-C must not leave workers draining the next
    # system's queues: the kernel sends SIGTERM when our (long-lived, main) thread exits.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def script(name: str) -> str:
    """A console script of the environment this Python runs in (rq, celery, dramatiq...)."""
    return str(Path(sys.executable).parent / name)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_groups(
    pgids: Sequence[int],
    children: Sequence[subprocess.Popen[bytes]] = (),
    timeout: float = STOP_TIMEOUT,
) -> None:
    """SIGTERM each group, wait until all are gone, SIGKILL what is left after `timeout`.

    `children` are our own processes among them: reaped as they exit, since a zombie still
    counts as a member of its group.
    """
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)

    def alive() -> bool:
        for child in children:
            child.poll()
        return any(group_alive(p) for p in pgids)

    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)


class Processes:
    """Processes of one system; `stop()` ends every one of them and everything they forked."""

    def __init__(self, logs: Path, pgid_file: Path | None = None) -> None:
        self.logs = logs
        self.pgid_file = pgid_file  # the parent kills these groups if this process dies
        self.running: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        if self.pgid_file is not None:
            with self.pgid_file.open("a") as pgids:
                pgids.write(f"{proc.pid}\n")
        self.running.append(proc)
        return proc

    def check(self) -> None:
        """Raise if one of them has exited (a worker that died makes a drain hang)."""
        for proc in self.running:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {self.logs}")

    def stop(self) -> None:
        kill_groups([p.pid for p in self.running], self.running)
        for proc in self.running:
            proc.wait()
        self.running.clear()
