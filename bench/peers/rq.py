"""RQ: jobs in Redis, finished jobs in its finished registry; its default worker forks per job
(tuned: SimpleWorker x 2, one per core, no fork per job)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import rq
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from bench import work
from bench.peers.base import Kind, Peer, chunks
from bench.procs import script

QUEUE = "bench"
WORKERS = 2  # SimpleWorker runs jobs in its own process: one per core
FUNCTIONS: dict[Kind, Callable[[], object]] = {"noop": work.noop, "fib": work.fib20}


class Rq(Peer):
    name = "rq"
    label = "RQ"
    distributions = ("rq", "redis")

    def prepare(self) -> None:
        self.redis = redis.Redis.from_url(self.ctx.redis_urls["queue"], socket_timeout=10)
        self.queue = rq.Queue(QUEUE, connection=self.redis)

    def close(self) -> None:
        super().close()
        self.redis.close()

    def knobs(self) -> dict[str, Any]:
        simple = " -w rq.worker.SimpleWorker" if self.tuned else ""
        worker = f"rq worker{simple} x {self._workers()}"
        return {"worker": worker, "bulk": "Queue.enqueue_many of 1,000 jobs"}

    def reset(self) -> None:
        self.redis.flushdb()

    def sender(self, kind: Kind) -> Callable[[], object]:
        enqueue, function = self.queue.enqueue, FUNCTIONS[kind]
        return lambda: enqueue(function)

    def stamp_sender(self) -> Callable[[float], object]:
        enqueue = self.queue.enqueue
        return lambda t0: enqueue(work.stamp, t0)

    def enqueue_bulk(self, kind: Kind, count: int) -> None:
        function = FUNCTIONS[kind]
        for size in chunks(count):
            self.queue.enqueue_many([rq.Queue.prepare_data(function) for _ in range(size)])

    def queued(self) -> int:
        return int(self.queue.count)

    def done(self) -> int:
        return int(FinishedJobRegistry(queue=self.queue).count)

    def failed(self) -> int:
        return int(FailedJobRegistry(queue=self.queue).count)

    def start_workers(self) -> None:
        argv = [script("rq"), "worker", *self._flags()]
        for i in range(self._workers()):
            self.ctx.procs.spawn(f"rq-worker-{i}", argv, self.ctx.env)

    def _workers(self) -> int:
        return WORKERS if self.tuned else 1

    def _flags(self) -> list[str]:
        where = ["-u", self.ctx.redis_urls["queue"], QUEUE]
        return (["-w", "rq.worker.SimpleWorker"] if self.tuned else []) + where
