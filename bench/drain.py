"""Where a drain's time goes: one `taskq-worker` with no flags drains a queue, per process.

    .venv-bench/bin/python -m bench.drain [--kind noop|fib] [--tasks 10000] [--runs 3]
        [--base DIR]

Fills the queue with `--tasks` NoopTask or Fib20Task (the bench's own types, through
`Client.enqueue` from 16 threads), starts one `taskq-worker`, and once the last task is recorded
prints, for each run: the rate from the worker's start and after its first task, the CPU per task
of the worker process, its fork server and each runner, their context switches per task (a
process that sleeps and is woken counts a voluntary one; one that a waking process pushes off
its core an involuntary one), and PostgreSQL transactions per task (the completion poll's
included: 50 a second). With `--base DIR` (a checkout of another revision, e.g. `git worktree add
--detach /tmp/taskq-main main`) that tree's worker runs too, alternating run by run with this
one, so both see the same machine. Servers: TASKQ_BENCH_DATABASE_URL and TASKQ_BENCH_REDIS_URL,
else an embedded pair (fsync on). The bench's table cannot separate changes of a few percent on a
noisy machine; CPU per task per process can.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis

from bench.cpu import TICKS
from bench.peers.taskq import TASK_TYPES, write_site
from bench.servers import DATABASE_URL_ENV, REDIS_URL_ENV, given_or_embedded
from taskq_core.client import Client

REPO = Path(__file__).resolve().parent.parent
DATABASE = "bench_drain"
REDIS_DB = 8  # beside the bench's own 1-6 and apikey's 7
POLL = 0.02  # seconds between completion counts


@dataclass
class Process:
    pid: int
    name: str
    cpu: float  # seconds
    voluntary: int
    involuntary: int


def _tree(pid: int) -> list[Process]:
    """`pid` and its descendants, alive now (Linux /proc)."""
    found: list[Process] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            status = dict(
                line.split(":\t", 1)
                for line in Path(f"/proc/{current}/status").read_text().splitlines()
                if ":\t" in line
            )
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # gone meanwhile
        found.append(
            Process(
                current,
                Path(f"/proc/{current}/cmdline").read_bytes().split(b"\0")[0].decode()[:24],
                (int(stat[11]) + int(stat[12])) / TICKS,
                int(status["voluntary_ctxt_switches"]),
                int(status["nonvoluntary_ctxt_switches"]),
            )
        )
        pending.extend(int(child) for child in children)
    return found


def _commits(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _fill(env: dict[str, str], task_type: str, count: int) -> None:
    with (
        Client(database_url=env["TASKQ_DATABASE_URL"], redis_url=env["TASKQ_REDIS_URL"]) as client,
        ThreadPoolExecutor(16) as pool,
    ):
        list(pool.map(lambda _: client.enqueue(task_type, {}), range(count)))


def drain(env: dict[str, str], tree: str, task_type: str, count: int, label: str) -> float:
    """One run: fill, drain with a fresh worker, print its figures; the steady rate."""
    database_url = env["TASKQ_DATABASE_URL"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks CASCADE")
    with redis.Redis.from_url(env["TASKQ_REDIS_URL"]) as ids:
        ids.flushdb()
    _fill(env, task_type, count)
    with psycopg.connect(database_url, autocommit=True) as conn:
        commits = _commits(conn)
        start = time.perf_counter()
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskq_core.cli", "worker"],
            env=env,
            stderr=subprocess.DEVNULL,
            cwd=tree,  # `-m` puts the current directory first on sys.path
        )
        first: float | None = None
        while True:
            done = conn.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()
            now = time.perf_counter()
            if done and done[0] and first is None:
                first = now
            if done and done[0] >= count:
                break
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited ({worker.returncode})")
            time.sleep(POLL)
        processes = _tree(worker.pid)
        time.sleep(0.6)  # PostgreSQL publishes its counters at most every 500 ms
        commits = _commits(conn) - commits
    worker.terminate()
    worker.wait(30)
    assert first is not None
    steady = count / max(now - first, 1e-9)
    print(
        f"{label}: {count / (now - start):,.0f}/s from the start, {steady:,.0f}/s after the "
        f"first task ({first - start:.2f} s); {commits / count:.3f} transactions per task"
    )
    for p in processes:
        print(
            f"    {p.name:24s} CPU {p.cpu / count * 1e6:6.1f} µs/task, switches per task: "
            f"{p.voluntary / count:.2f} voluntary, {p.involuntary / count:.2f} involuntary"
        )
    return steady


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--kind", choices=sorted(TASK_TYPES), default="noop")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", help="another checkout whose worker alternates with this one")
    args = parser.parse_args(argv)
    with (
        given_or_embedded(
            os.environ.get(DATABASE_URL_ENV), os.environ.get(REDIS_URL_ENV), "taskq-drain-"
        ) as (database_url, redis_url),
        tempfile.TemporaryDirectory(prefix="taskq-drain-site-") as folder,
    ):
        site = write_site(Path(folder))
        sys.path.insert(0, str(site))  # the bench's task types, for this process's client
        with psycopg.connect(database_url, autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")
        own = urlsplit(database_url)._replace(path=f"/{DATABASE}").geturl()
        trees = {"this tree": str(REPO)} | ({"base": args.base} if args.base else {})
        rates: dict[str, list[float]] = {label: [] for label in trees}
        for run in range(args.runs):
            for label, tree in trees.items():
                env = {
                    **os.environ,
                    "TASKQ_DATABASE_URL": own,
                    "TASKQ_REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}",
                    "PYTHONPATH": os.pathsep.join([str(site), tree]),
                }
                subprocess.run(
                    [sys.executable, "-m", "taskq_core.cli", "db", "upgrade"],
                    env=env,
                    check=True,
                    capture_output=True,
                    cwd=tree,
                )
                rates[label].append(
                    drain(env, tree, TASK_TYPES[args.kind], args.tasks, f"run {run + 1}, {label}")
                )
        for label, steady in rates.items():
            print(
                f"{label}: steady {statistics.median(steady):,.0f}/s "
                f"({min(steady):,.0f}-{max(steady):,.0f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
