"""An upper bound, not a worker: what runners that pop, claim, run and record their own tasks
could reach (the option #12 asked to measure against today's worker, whose event loop does all
of that for runners that only run).

    .venv-bench/bin/python -m bench --peers taskq,taskq-selfclaim,dramatiq

One process per core (as `taskq-worker` has one runner per core), each forked after the
plugins are loaded, each a small event loop that pops up to BATCH ids, claims them with the
worker's statement, runs them one by one in-process as a runner does (input validated, the
task's own code), decides each outcome as the worker does, writes the batch's outcomes with the
worker's group-commit statement, announces them and logs the worker's line per task.

What a real worker built this way would still need, and this leaves out: lease renewal,
heartbeats, the sweeper and the scheduler, timeouts and cancellation (a supervisor that can kill
a runner mid-task, so each runner would tell it what it runs), async task types, hand-back on
stop, and the tuner. All of them cost something per task or per second, so the figures this
gives are a ceiling for the design, not a forecast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from taskq_core import broker as broker_module
from taskq_core import devstate
from taskq_core.broker import Broker
from taskq_core.cli.running import setup_logging
from taskq_core.db import urls
from taskq_core.plugins import Registry, load_registry
from taskq_core.records import ClaimedTask, Finish
from taskq_core.settings import Settings
from taskq_core.worker import outcomes
from taskq_core.worker.announcer import Announcer
from taskq_core.worker.execution import Instances, Job
from taskq_core.worker.holding import new_worker_id
from taskq_core.worker.runner import run_job
from taskq_core.worker.sql import Claims

log = logging.getLogger("taskq.worker")

BATCH = 64  # ids per pop while the queue is deep, as the worker's BATCH_TARGET
POP_WAIT = 1.0  # seconds


async def serve(registry: Registry, settings: Settings) -> None:
    """Pop, claim, run, record and announce until killed."""
    database_url, redis_url = devstate.resolve_urls(settings)
    claims = Claims(urls.conninfo(database_url), settings.queue)
    popper = Broker(broker_module.connect(redis_url, blocking=True), settings.queue)
    announcer = Announcer(Broker(broker_module.connect(redis_url), settings.queue))
    worker_id = new_worker_id()
    instances = Instances()
    while True:
        _, ids = await popper.pop_many(BATCH, POP_WAIT)
        if not ids:
            continue
        done: list[tuple[ClaimedTask, Finish]] = []
        for task in await claims.claim(ids, worker_id, settings.lease_seconds):
            started = time.perf_counter()
            outcome = run_job(registry, instances, Job.of(task, worker_id), lambda _: None)
            task_type = registry.types.get(task.task_type)
            finish = outcomes.decide(outcome, task, task_type.cls if task_type else None)
            log.info(
                "task %d %s %s in %.1f ms (attempt %d/%d)",
                task.id,
                task.task_type,
                finish.outcome,
                (time.perf_counter() - started) * 1000,
                task.attempt,
                task.max_attempts,
            )
            done.append((task, finish))
        await claims.finish(worker_id, done)
        announcer.recorded(done, {})


def main() -> int:
    settings = Settings()
    setup_logging(settings)
    registry = load_registry()
    children = []
    for _ in range(os.cpu_count() or 1):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            asyncio.run(serve(registry, settings))
            os._exit(0)
        children.append(pid)
    # The bench stops its workers with SIGTERM: the children go with this process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for pid in children:
            os.waitpid(pid, 0)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
