"""Test-only fault points: the process dies (or pauses) where TASKQ_FAULT names, so tests can
prove recovery."""

from __future__ import annotations

import os
import signal

FAULT_EXIT_CODE = 70


def fault_point(name: str) -> None:
    """Exit at once, without cleanup, if the TASKQ_FAULT environment variable is `name`."""
    if os.environ.get("TASKQ_FAULT") == name:
        os._exit(FAULT_EXIT_CODE)


def fault_pause(name: str) -> None:
    """Wait here for a signal the process handles if the TASKQ_FAULT environment variable is
    `name`: the test decides when the process goes on, and how (SIGUSR1: just go on)."""
    if os.environ.get("TASKQ_FAULT") == name:
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        signal.pause()
