"""What a worker holds: its options, its id, each task it runs with why it is stopping, and
what counts as an outage it waits out."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from redis.exceptions import RedisError

from taskq_core.records import ClaimedTask
from taskq_core.worker.sql import CONNECTION_ERRORS

BACKOFF_START, BACKOFF_MAX = 0.2, 5.0  # seconds, while PostgreSQL or Redis is unreachable
OUTAGE_ERRORS = (RedisError, OSError, *CONNECTION_ERRORS)

StopReason = Literal["cancelled", "shutdown", "lost"]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Running:
    """A task this worker holds, and why it is being stopped, if it is."""

    task: ClaimedTask
    job: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None  # when it stopped executing (its outcome may not be written yet)


@dataclass(frozen=True)
class WorkerOptions:
    # The most tasks in flight at once in this process; None: the tuner's own ceiling. The
    # tuner moves the limit within it (tuner.py); given, it is also where the limit starts.
    concurrency: int | None = None
    lease_seconds: float = 30.0
    sweep_interval: float = 5.0
    grace_seconds: float = 20.0  # on shutdown, how long running tasks may take to finish
    queue: str = "default"
    # Seconds finished tasks are kept, by status (None: forever); empty: retention off.
    retention: Mapping[str, float | None] = field(default_factory=dict)
    prepare: bool = True  # False: no server-side prepared statements (PgBouncer)
