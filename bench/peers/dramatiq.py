"""Dramatiq with its Redis broker, no result store; its defaults: a process per core x 8 threads.

The `dramatiq bench.peers.dramatiq` workers import this module: the broker reads its URL from
BENCH_DRAMATIQ_URL, which the session sets before anything imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench import work
from bench.peers.base import Kind, Peer, Unsupported
from bench.procs import script

QUEUE = "bench"
PROCESSES, THREADS = 2, 8

broker = RedisBroker(url=os.environ.get("BENCH_DRAMATIQ_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop() -> None:
    work.noop()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def fib20() -> None:
    work.fib20()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def stamp(t0: float) -> None:
    work.stamp(t0)


ACTORS: dict[Kind, Any] = {"noop": noop, "fib": fib20}


class Dramatiq(Peer):
    name = "dramatiq"
    label = "Dramatiq (Redis)"
    distributions = ("dramatiq", "redis")

    def prepare(self) -> None:
        self.expected = 0  # Dramatiq keeps no record of finished messages: done = sent - left

    def knobs(self) -> dict[str, Any]:
        return {
            "worker": " ".join(["dramatiq", *self._flags()]),
            "done": "messages sent minus the broker's qsize (queue + unacked)",
        }

    def reset(self) -> None:
        broker.client.flushdb()
        self.expected = 0

    def sender(self, kind: Kind) -> Callable[[], object]:
        send: Callable[[], object] = ACTORS[kind].send
        return send

    def stamp_sender(self) -> Callable[[float], object]:
        send: Callable[[float], object] = stamp.send
        return send

    def enqueue_bulk(self, kind: Kind, count: int) -> None:
        raise Unsupported("— (no bulk enqueue: group() sends one message at a time)")

    def fill(self, kind: Kind, count: int) -> None:
        super().fill(kind, count)
        self.expected += count

    def queued(self) -> int:
        return int(broker.do_qsize(QUEUE))

    def done(self) -> int:
        return self.expected - self.queued()

    def start_workers(self) -> None:
        argv = [script("dramatiq"), "bench.peers.dramatiq", *self._flags()]
        self.ctx.procs.spawn("dramatiq", argv, self.ctx.env)

    def _flags(self) -> list[str]:
        flags = ["--queues", QUEUE]
        if self.tuned:
            flags += ["--processes", str(PROCESSES), "--threads", str(THREADS)]
        return flags
