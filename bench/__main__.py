"""`python -m bench`: parse the options and run the benchmark (see bench/run.py)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from bench import peers, report
from bench.config import Sizes


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def parse(argv: list[str]) -> argparse.Namespace:
    defaults = Sizes()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure taskq against Celery, RQ, Dramatiq and procrastinate on the same "
        "PostgreSQL and Redis: enqueue (one call per task, and bulk), drain (no-op and fib(20)) "
        "and enqueue-to-start latency. Prints a table; writes JSON to bench/results/. Servers: "
        "embedded unless TASKQ_BENCH_DATABASE_URL and TASKQ_BENCH_REDIS_URL are set (the bench "
        "creates databases bench_* there and empties Redis databases 1-6).",
    )
    parser.add_argument("--tasks", type=_positive, help=f"per phase (default {defaults.tasks:,})")
    parser.add_argument("--fib-tasks", type=_positive, help="fib(20) drain size (default --tasks)")
    parser.add_argument("--runs", type=_positive, help=f"runs per system (default {defaults.runs})")
    parser.add_argument("--peers", default=peers.DEFAULT, help=f"default {peers.DEFAULT}")
    parser.add_argument("--latency-seconds", type=float, help="how long the 100/s phase lasts")
    parser.add_argument("--http-seconds", type=_positive, help="how long wrk posts tasks")
    parser.add_argument("--phase-timeout", type=float, help="seconds before a cell reads timeout")
    parser.add_argument("--taskq-workers", type=_positive, help="taskq-worker processes")
    parser.add_argument("--taskq-processes", type=_positive, help="taskq-worker --processes")
    parser.add_argument("--taskq-concurrency", type=_positive, help="taskq-worker --concurrency")
    parser.add_argument(
        "--taskq-base",
        help="a taskq checkout (e.g. a worktree of main) whose API and worker run as the system "
        "taskq-base: old against new code in one invocation",
    )
    parser.add_argument(
        "--phases",
        help="comma-separated phases to run (default all): enqueue_http, enqueue_python, "
        "enqueue_threads, enqueue_async, bulk, drain_noop, drain_fib, latency",
    )
    parser.add_argument(
        "--peers-tuned",
        action="store_true",
        help="run the peers' workers with layouts tuned for 2 cores instead of their defaults",
    )
    parser.add_argument(
        "--quick", action="store_true", help="50 tasks, 1 run, 1 s of latency: for the tests"
    )
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="where the JSON goes")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    given = {
        "tasks": args.tasks,
        "fib_tasks": args.fib_tasks or args.tasks,
        "runs": args.runs,
        "latency_seconds": args.latency_seconds,
        "http_seconds": args.http_seconds,
        "phase_timeout": args.phase_timeout,
        "taskq_workers": args.taskq_workers,
        "taskq_processes": args.taskq_processes,
        "taskq_concurrency": args.taskq_concurrency,
        "peers_tuned": args.peers_tuned or None,
        "phases": args.phases,
        "taskq_base": args.taskq_base,
    }
    return dataclasses.replace(sizes, **{k: v for k, v in given.items() if v is not None})


def main(argv: list[str]) -> int:
    args = parse(argv)
    try:
        systems = peers.expand(args.peers)
    except ValueError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    from bench import run

    return run.main(sizes_from(args), systems, args.results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
