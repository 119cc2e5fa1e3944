"""`taskq-worker` (and `taskq worker`): its options, and starting the worker process.

Imports only what a worker needs before its first task: this module is the entry point of every
worker scaled from zero, and each module imported here is paid for in start-up time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
from collections.abc import Sequence

from taskq_core.cli.running import positive, run
from taskq_core.settings import Settings

log = logging.getLogger("taskq")


def main(argv: Sequence[str] | None = None, prog: str = "taskq-worker") -> int:
    # No collections while the start-up imports and builds what lives for good (pydantic makes
    # many objects): run_worker turns them back on before its loop, and whatever way the command
    # ends, the caller gets them back.
    gc.disable()
    try:
        parser = argparse.ArgumentParser(
            prog=prog,
            description="Run a taskq worker: pop task ids by priority, claim, run, record.",
        )
        add_options(parser)
        parser.set_defaults(func=run_worker, command="worker")
        return run(parser, argv)
    finally:
        gc.enable()


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=positive,
        default=None,
        help="the most async tasks in flight at once in the event loop, and the most runner "
        "processes. Within it the worker finds its own number of async tasks, growing while the "
        "queue is deep and the loop has room, shrinking when the loop lags or memory is tight "
        "(default: up to 256); each runner claims as many sync tasks at once as run in 50 ms",
    )
    parser.add_argument(
        "--processes",
        type=positive,
        default=os.cpu_count() or 1,
        help="runner processes for sync task types, each popping, claiming, running and "
        "recording its own, one at a time "
        f"(default: one per core, {os.cpu_count() or 1} here)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=20.0,
        help="on SIGTERM or Ctrl-C, how long running tasks may take to finish before they are "
        "handed back to the queue (default 20); a second signal stops at once",
    )


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core import devstate
    from taskq_core.faults import fault_pause
    from taskq_core.plugins import load_registry
    from taskq_core.processes import child_env
    from taskq_core.worker.holding import WorkerOptions, new_worker_id
    from taskq_core.worker.runner import Config
    from taskq_core.worker.runners import Runners

    database_url, redis_url = devstate.resolve_urls(settings)
    registry = load_registry()
    worker_id = new_worker_id()
    # Each runs one task at a time: --concurrency bounds how many there are too.
    runners = Runners(
        min(args.processes, args.concurrency or args.processes),
        Config(
            supervisor_id=worker_id,
            database_url=database_url,
            redis_url=redis_url,
            queue=settings.queue,
            lease_seconds=settings.lease_seconds,
            prepare=settings.database_prepare,
            sync_types=registry.sync_names,
        ),
        env=child_env(database_url, redis_url),
    )
    options = WorkerOptions(
        concurrency=args.concurrency,
        lease_seconds=settings.lease_seconds,
        sweep_interval=settings.sweep_interval_seconds,
        grace_seconds=args.grace_seconds,
        queue=settings.queue,
        retention=settings.retention(),
        prepare=settings.database_prepare,
    )
    # From here the runners may hold tasks: a stop asked for before the event loop handles
    # signals must still let them finish and give back the rest.
    early_stops: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: early_stops.append(signum))
    if registry.has_sync:
        # The runners' fork server and the runners, forked now that the plugins are loaded and
        # before the worker starts its loop: one interpreter start-up instead of two, and the
        # runners pop and claim while the worker starts.
        runners.fork_early(registry)
    fault_pause("worker_before_loop")

    from taskq_core.worker.loop import Worker
    from taskq_core.worker.retention import warn_if_short

    warn_if_short(settings.retention())
    # What the start-up built lives as long as the worker: collections need not walk it again.
    gc.freeze()
    gc.enable()

    async def main() -> bool:
        worker = Worker(
            database_url=database_url,
            redis_url=redis_url,
            registry=registry,
            options=options,
            worker_id=worker_id,
            runners=runners,
        )
        loop = asyncio.get_running_loop()
        stops = 0

        def on_signal() -> None:
            nonlocal stops
            stops += 1
            if stops > 1:
                # A second signal: stop at once; the leases bring back what was running.
                log.warning("second signal: exiting now")
                os._exit(1)
            worker.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        for _ in early_stops:
            on_signal()
        await worker.run()
        return worker.failed

    # Non-zero when a loop of the worker died: a supervisor then sees a failure to restart.
    return 1 if asyncio.run(main()) else 0
