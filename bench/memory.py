"""Does a taskq worker's memory stay flat? RSS of one worker process over many tasks.

python -m bench.memory [--tasks 200000] [--task-type NoopTask]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import report
from bench.peers.taskq import write_site
from taskq_core import broker, enqueue
from taskq_core.db import engines
from taskq_core.db.storage import Storage
from taskq_core.processes import child_env
from taskq_core.records import NewTask

REPO = Path(__file__).resolve().parent.parent
BATCH = 1000
WARM_UP = 0.1  # fraction of the tasks after which the baseline RSS is taken


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and all its descendants: a worker is that whole family (its
    runners are children of its fork server)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            status = (proc / "status").read_text()
        except OSError:
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(proc.name)] = int(line.split()[1])
    family = {pid}
    while grown := {child for child, parent in parents.items() if parent in family} - family:
        family |= grown
    return sum(rss.get(member, 0) for member in family)


async def seed(url: str, redis_url: str, count: int, task_type: str) -> None:
    engine = engines.async_engine(url, pool_size=2)
    redis = broker.connect(redis_url)
    storage, queue = Storage(engine), broker.Broker(redis)
    new = [NewTask(task_type=task_type, input_data={}, priority=3, max_attempts=3)] * BATCH
    try:
        for _ in range(count // BATCH):
            await enqueue.submit(storage, queue, new)
    finally:
        await redis.aclose()
        await engine.dispose()


def run(url: str, redis_url: str, args: argparse.Namespace, site: Path) -> dict[str, Any]:
    engines.upgrade(url)
    asyncio.run(seed(url, redis_url, args.tasks, args.task_type))
    env = child_env(url, redis_url)
    env["PYTHONPATH"] = f"{site}:{REPO}"
    env["TASKQ_LOG_LEVEL"] = "WARNING"  # one line per task would measure the log, not us
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskq_core.cli", "worker", "--concurrency", "64"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    samples: list[tuple[int, int]] = []  # (tasks done, RSS KiB)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                (done,) = conn.execute(
                    "SELECT count(*) FROM tasks WHERE status = 'completed'"
                ).fetchone() or (0,)
                samples.append((done, rss_kib(worker.pid)))
                if done >= args.tasks or worker.poll() is not None:
                    break
                time.sleep(1.0)
    finally:
        worker.terminate()
        worker.wait(30)
    warm = [rss for done, rss in samples if done >= WARM_UP * args.tasks]
    baseline, final = warm[0], warm[-1]
    return {
        "date": datetime.now(UTC).isoformat(),
        "tasks": args.tasks,
        "task_type": args.task_type,
        "rss_kib_after_warm_up": baseline,
        "rss_kib_at_end": final,
        "rss_kib_peak": max(warm),
        "growth": (final - baseline) / baseline,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--task-type", default="NoopTask")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskq-memory-") as tmp:
        from taskq_core.embedded import EmbeddedServers

        site = write_site(Path(tmp) / "site")
        with EmbeddedServers(Path(tmp) / "servers", durable=True) as servers:
            result = run(servers.database_url, servers.redis_url, args, site)
    print(
        f"worker RSS (with its runners) after warm-up {result['rss_kib_after_warm_up']} KiB, "
        f"at the end {result['rss_kib_at_end']} KiB, peak {result['rss_kib_peak']} KiB: "
        f"growth {100 * result['growth']:+.1f}% over {args.tasks} tasks"
    )
    path = report.save("memory", result)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
