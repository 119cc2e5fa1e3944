"""procrastinate: PostgreSQL only (jobs table, LISTEN/NOTIFY); one worker at its defaults.

The `procrastinate --app bench.peers.procrastinate.app worker` processes import this module: the
app reads its DSN from BENCH_PROCRASTINATE_DSN, which the session sets before anything imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import procrastinate

from bench import work
from bench.peers.base import Database, Kind, Peer, chunks
from bench.procs import script

QUEUE = "bench"
WORKERS, CONCURRENCY = 2, 4  # tuned: processes (one per core) x jobs in flight in each

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_PROCRASTINATE_DSN"))
)


@app.task(name="noop", queue=QUEUE)
def noop() -> None:
    work.noop()


@app.task(name="fib20", queue=QUEUE)
def fib20() -> int:
    return work.fib20()


@app.task(name="stamp", queue=QUEUE)
def stamp(t0: float) -> None:
    work.stamp(t0)


TASKS: dict[Kind, Any] = {"noop": noop, "fib": fib20}


class Procrastinate(Peer):
    name = "procrastinate"
    label = "procrastinate (PostgreSQL only)"
    distributions = ("procrastinate", "psycopg", "psycopg-pool")

    def prepare(self) -> None:
        self.db = Database(self.ctx.database_url)
        app.open()
        if self.db.sql("SELECT to_regclass('procrastinate_jobs')")[0][0] is None:
            app.schema_manager.apply_schema()

    def close(self) -> None:
        super().close()
        app.close()
        self.db.close()

    def knobs(self) -> dict[str, Any]:
        return {
            "worker": " ".join(["procrastinate worker", *self._flags()[2:]])
            + f" x {self._workers()}",
            "bulk": "Task.batch_defer of 1,000 jobs",
        }

    def reset(self) -> None:
        self.db.truncate(prefix="procrastinate_")

    def sender(self, kind: Kind) -> Callable[[], object]:
        defer: Callable[[], object] = TASKS[kind].defer
        return defer

    def stamp_sender(self) -> Callable[[float], object]:
        defer = stamp.defer
        return lambda t0: defer(t0=t0)

    def enqueue_bulk(self, kind: Kind, count: int) -> None:
        task = TASKS[kind]
        for size in chunks(count):
            task.batch_defer(*({} for _ in range(size)))

    def queued(self) -> int:
        return self.db.count("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")

    def done(self) -> int:
        return self.db.count("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")

    def failed(self) -> int:
        return self.db.count("SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'")

    def start_workers(self) -> None:
        argv = [script("procrastinate"), "--app", "bench.peers.procrastinate.app", "worker"]
        argv += self._flags()
        for i in range(self._workers()):
            self.ctx.procs.spawn(f"procrastinate-worker-{i}", argv, self.ctx.env)

    def _workers(self) -> int:
        return WORKERS if self.tuned else 1

    def _flags(self) -> list[str]:
        return ["--queues", QUEUE] + (["--concurrency", str(CONCURRENCY)] if self.tuned else [])
