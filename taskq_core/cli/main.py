"""Command-line entry points: parse arguments, build settings, delegate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskq_core import logs
from taskq_core.cli import failures, operations, remote
from taskq_core.errors import TaskqError
from taskq_core.settings import Settings

if TYPE_CHECKING:
    from taskq_core.worker.loop import Worker

log = logging.getLogger("taskq")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _setup_logging(settings: Settings) -> None:
    from taskq_core import redaction

    logs.setup(settings.log_level, settings.log_format)
    redaction.install()


def _uvicorn_logging(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging as ours (format, timestamps, quiet libraries), applied in each of its
    processes: `taskq api --workers N` starts them afresh."""
    formatter = "JsonFormatter" if settings.log_format == "json" else "TextFormatter"
    level = settings.log_level.upper()
    quiet = {"level": "WARNING" if level in ("DEBUG", "INFO") else level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"taskq": {"()": f"taskq_core.logs.{formatter}"}},
        # No secret in a log line, whoever wrote it (docs/security.md).
        "filters": {"redact": {"()": "taskq_core.redaction.RedactingFilter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "taskq",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"level": level},
            **{name: quiet for name in logs.QUIET if name != "uvicorn.access"},
        },
    }


# ---- commands -------------------------------------------------------------------------------


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from taskq_core import devstate
    from taskq_core.api import create_app
    from taskq_core.cli.keys import check_exposure
    from taskq_core.cli.serve import server_options

    # Fail here, with the message, not inside uvicorn's start-up.
    database_url, redis_url = devstate.resolve_urls(settings)
    check_exposure(args.host, settings, insecure=args.insecure)
    options = {
        "host": args.host,
        "port": args.port,
        "log_level": settings.log_level.lower(),
        "log_config": _uvicorn_logging(settings),
        "access_log": args.access_log,
        **server_options(settings),
    }
    logs.set_title(f"taskq-api {args.host}:{args.port}")
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Several processes share the port; each builds its app from the environment.
    os.environ.update(TASKQ_DATABASE_URL=database_url, TASKQ_REDIS_URL=redis_url)
    uvicorn.run("taskq_core.api:app", workers=args.workers, **options)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core import devstate
    from taskq_core.processes import child_env
    from taskq_core.worker.pool import RunnerPool

    database_url, redis_url = devstate.resolve_urls(settings)
    pool = RunnerPool(args.processes, env=child_env(database_url, redis_url))

    async def start() -> Worker:
        # The runners' fork server loads the plugins in its own process while this one imports
        # the worker and loads them too: the two start-ups overlap instead of following each other.
        await pool.prepare()
        from taskq_core.plugins import load_registry
        from taskq_core.worker.holding import WorkerOptions
        from taskq_core.worker.loop import Worker
        from taskq_core.worker.retention import warn_if_short

        try:
            registry = load_registry()
        except BaseException:
            await pool.close()
            raise
        warn_if_short(settings.retention())
        return Worker(
            database_url=database_url,
            redis_url=redis_url,
            registry=registry,
            options=WorkerOptions(
                concurrency=args.concurrency,
                lease_seconds=settings.lease_seconds,
                sweep_interval=settings.sweep_interval_seconds,
                grace_seconds=args.grace_seconds,
                queue=settings.queue,
                retention=settings.retention(),
                prepare=settings.database_prepare,
            ),
            pool=pool,
        )

    async def main() -> bool:
        worker = await start()
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
        await worker.run()
        return worker.failed

    # Non-zero when a loop of the worker died: a supervisor then sees a failure to restart.
    return 1 if asyncio.run(main()) else 0


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core import devstate
    from taskq_core.db import engines

    database_url, _ = devstate.resolve_urls(settings)
    engines.upgrade(database_url, prepare=settings.database_prepare)
    print("database schema is up to date")
    return 0


def cmd_plugins(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core.cli.render import plugin_table
    from taskq_core.plugins import load_registry

    registry = load_registry()
    plugin_table(registry, as_json=args.json)
    return 1 if registry.failures and args.strict else 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core.cli.demo import run_demo

    return run_demo(
        settings,
        tasks=args.tasks,
        workers=args.workers,
        port=args.port,
        export_rows=args.export_rows,
    )


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core.cli.dev import run_dev

    return run_dev(settings, host=args.host, port=args.port, workers=args.workers)


# ---- parsers --------------------------------------------------------------------------------


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=None,
        help="the most tasks in flight at once; async ones share the event loop. The worker "
        "finds its own number within it, growing while the queue is deep and tasks are short, "
        "shrinking when tasks queue for the runners or memory is tight (default: up to 256)",
    )
    parser.add_argument(
        "--processes",
        type=_positive,
        default=os.cpu_count() or 1,
        help="runner processes for sync task types, each running one task at a time "
        f"(default: one per core, {os.cpu_count() or 1} here)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=20.0,
        help="on SIGTERM or Ctrl-C, how long running tasks may take to finish before they are "
        "handed back to the queue (default 20); a second signal stops at once",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskq", description="taskq: a plugin-based distributed task queue."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = commands.add_parser("api", help="serve the REST API")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    api.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="API processes sharing the port (default 1; the API is stateless)",
    )
    api.add_argument(
        "--access-log", action=argparse.BooleanOptionalAction, default=False, help="log requests"
    )
    api.add_argument(
        "--insecure",
        action="store_true",
        help="serve on a non-loopback address even when no API key exists (anyone who can "
        "reach the port can then submit, read and cancel tasks); a warning at every start",
    )
    api.set_defaults(func=cmd_api)

    from taskq_core.cli import keys

    keys.add_parser(commands)

    worker = commands.add_parser("worker", help="run a worker (the same as taskq-worker)")
    _add_worker_options(worker)
    worker.set_defaults(func=cmd_worker)

    database = commands.add_parser("db", help="database schema")
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="create or migrate the schema").set_defaults(
        func=cmd_db_upgrade
    )

    tasks = commands.add_parser("tasks", help="look at, cancel, retry or delete tasks")
    task_commands = tasks.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")
    remote.add_commands(commands, task_commands, _positive)
    clear = task_commands.add_parser(
        "clear", help="delete the first (oldest) N finished tasks; pending and running ones stay"
    )
    clear.add_argument("count", type=_positive, metavar="N")
    clear.add_argument(
        "--include-unfinished", action="store_true", help="delete pending and running ones too"
    )
    clear.set_defaults(func=operations.cmd_clear)
    operations.add_task_commands(task_commands)

    operations.add_commands(commands, _positive)

    plugins = commands.add_parser(
        "plugins", help="list plugins, their task types, and plugins that failed to load"
    )
    plugins.add_argument(
        "--strict", action="store_true", help="exit 1 when a plugin failed to load"
    )
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.set_defaults(func=cmd_plugins)

    demo = commands.add_parser(
        "demo", help="create random tasks, spawn workers and watch them drain"
    )
    demo.add_argument("--tasks", type=_positive, default=500, help="how many (default 500)")
    demo.add_argument("--workers", type=_positive, default=3, help="worker processes (default 3)")
    demo.add_argument(
        "--port", type=int, default=8000, help="its API's port (default 8000, else any free one)"
    )
    demo.add_argument(
        "--export-rows",
        type=int,
        default=2_000_000,
        help="rows of each of the 3 exports shown with progress bars, when taskq-export is "
        "installed (default 2000000; 0: none)",
    )
    demo.set_defaults(func=cmd_demo)

    dev = commands.add_parser(
        "dev",
        help="run everything on this machine: PostgreSQL and Redis (embedded unless configured), "
        "migrations, the API and workers, until Ctrl-C",
    )
    dev.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    dev.add_argument("--workers", type=_positive, default=2, help="worker processes (default 2)")
    dev.set_defaults(func=cmd_dev)
    return parser


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: a TASKQ_* variable is malformed
        print(f"taskq: {failures.describe_settings(exc)}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        code: int = args.func(args, settings)
    except TaskqError as exc:
        print(f"taskq: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # One line, never a traceback (TASKQ_LOG_LEVEL=DEBUG logs it for a bug report).
        log.debug("%s failed", args.command, exc_info=exc)
        print(f"taskq: {failures.describe(exc)}", file=sys.stderr)
        return 1
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return _run(build_parser(), argv)


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="taskq-worker",
        description="Run a taskq worker: pop task ids by priority, claim, run, record.",
    )
    _add_worker_options(parser)
    parser.set_defaults(func=cmd_worker)
    return _run(parser, argv)
