"""Celery with the Redis broker, and its results in Redis or in PostgreSQL (closest to taskq).

`celery -A bench.peers.celery worker` imports this module: the app reads its broker and result
backend from BENCH_CELERY_* variables, which the session sets before anything imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import celery
import redis

from bench import work
from bench.peers.base import Database, Kind, Peer, chunks
from bench.procs import script

app = celery.Celery(
    "bench",
    broker=os.environ.get("BENCH_CELERY_BROKER"),
    backend=os.environ.get("BENCH_CELERY_BACKEND"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    work.noop()


@app.task(name="fib20")
def fib20() -> int:
    return work.fib20()


@app.task(name="stamp")
def stamp(t0: float) -> None:
    work.stamp(t0)


TASKS: dict[Kind, Any] = {"noop": noop, "fib": fib20}
QUEUE_KEY = "celery"  # the default queue's Redis list


class _Celery(Peer):
    concurrency: int
    distributions = ("celery", "kombu", "redis")

    def prepare(self) -> None:
        self.broker = redis.Redis.from_url(self.ctx.redis_urls["broker"], socket_timeout=10)

    def close(self) -> None:
        super().close()
        self.broker.close()

    def knobs(self) -> dict[str, Any]:
        return {
            "worker": " ".join(["celery worker", *self._flags()]),
            "bulk": "group(...).apply_async() of 1,000 signatures",
            "result_backend": os.environ.get("BENCH_CELERY_BACKEND", "").split("@")[-1],
        }

    def reset(self) -> None:
        self.broker.flushdb()

    def sender(self, kind: Kind) -> Callable[[], object]:
        delay: Callable[[], object] = TASKS[kind].delay
        return delay

    def stamp_sender(self) -> Callable[[float], object]:
        delay: Callable[[float], object] = stamp.delay
        return delay

    def enqueue_bulk(self, kind: Kind, count: int) -> None:
        task = TASKS[kind]
        for size in chunks(count):
            celery.group(task.s() for _ in range(size)).apply_async()

    def queued(self) -> int:
        return int(self.broker.llen(QUEUE_KEY))

    def start_workers(self) -> None:
        argv = [script("celery"), "-A", "bench.peers.celery", "worker", *self._flags()]
        argv += ["--loglevel", "WARNING"]
        self.ctx.procs.spawn(f"celery-{self.name}", argv, self.ctx.env)

    def _flags(self) -> list[str]:
        # Gossip and mingle only talk to other workers at start-up; there are none.
        flags = ["--without-gossip", "--without-mingle"]
        return (["-c", str(self.concurrency)] if self.tuned else []) + flags


class CeleryRedis(_Celery):
    name = "celery-redis"
    label = "Celery (Redis broker + Redis results)"
    concurrency = 4  # tuned

    def prepare(self) -> None:
        super().prepare()
        # Only result keys live in this database, so its size is the count of finished tasks.
        self.results = redis.Redis.from_url(self.ctx.redis_urls["results"], socket_timeout=10)

    def reset(self) -> None:
        super().reset()
        self.results.flushdb()

    def done(self) -> int:
        return int(self.results.dbsize())


class CeleryPostgres(_Celery):
    name = "celery-pg"
    label = "Celery (Redis broker + PostgreSQL results)"
    concurrency = 2  # tuned
    distributions = (*_Celery.distributions, "sqlalchemy", "psycopg2-binary")

    def prepare(self) -> None:
        super().prepare()
        self.db = Database(self.ctx.database_url)

    def close(self) -> None:
        super().close()
        self.db.close()

    def reset(self) -> None:
        super().reset()
        self.db.truncate(prefix="celery_")

    def done(self) -> int:
        return self.db.count("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")

    def failed(self) -> int:
        return self.db.count("SELECT count(*) FROM celery_taskmeta WHERE status = 'FAILURE'")
