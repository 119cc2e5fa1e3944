"""The task bodies every system runs: the same no-op, the same fib(20), the same start stamp."""

from __future__ import annotations

import os
import time

import redis

FIB_N = 20
STAMPS_URL_ENV = "BENCH_STAMPS_URL"  # the Redis database the start stamps go to
STAMPS_KEY = "bench:stamps"  # each entry: "<t0> <started>", both time.time() seconds

_stamps: redis.Redis | None = None


def noop() -> None:
    """Nothing at all: what is measured is the queue's own cost."""


def fib(n: int) -> int:
    """The naive exponential recursion, on purpose: a CPU-bound task."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def fib20() -> int:
    return fib(FIB_N)


def stamp(t0: float) -> None:
    """Record when the task started next to when its enqueue call began."""
    started = time.time()
    global _stamps
    if _stamps is None:
        _stamps = redis.Redis.from_url(os.environ[STAMPS_URL_ENV], socket_timeout=5)
    _stamps.rpush(STAMPS_KEY, f"{t0!r} {started!r}")
