"""Test-only fault points: the process dies where TASKQ_FAULT names, so tests can prove recovery."""

from __future__ import annotations

import os

FAULT_EXIT_CODE = 70


def fault_point(name: str) -> None:
    """Exit at once, without cleanup, if the TASKQ_FAULT environment variable is `name`."""
    if os.environ.get("TASKQ_FAULT") == name:
        os._exit(FAULT_EXIT_CODE)
