"""What one round trip costs when the machine is busy and when it has been idle.

python -m bench.wakeup [--calls 300] [--pause-ms 10]

The latency phase sends 100 tasks a second to idle workers, so between tasks every process on
the path sleeps. On a virtual machine waking a sleeping process costs far more than on bare metal,
and an enqueue-to-start path crosses several processes (client, API, PostgreSQL, Redis, worker,
runner). This measures the floor that sets: the same request back to back, and after a pause.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import report
from bench.measure import percentile


def timings(call: Callable[[], object], calls: int, pause: float) -> dict[str, float]:
    """p50/p95 of `call` in ms, each call `pause` seconds after the previous one ended."""
    for _ in range(20):
        call()
    samples = []
    for _ in range(calls):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return {"p50": percentile(samples, 50), "p95": percentile(samples, 95)}


def run(database_url: str, redis_url: str, calls: int, pause: float) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS wakeup (id bigserial PRIMARY KEY, v int)")
        probes: dict[str, Callable[[], object]] = {
            "PostgreSQL SELECT 1": lambda: conn.execute("SELECT 1").fetchone(),
            "PostgreSQL INSERT + COMMIT (fsync)": lambda: conn.execute(
                "INSERT INTO wakeup (v) VALUES (1)"
            ),
            "Redis PING": client.ping,
        }
        result = {
            name: {
                "back_to_back_ms": timings(probe, calls, 0.0),
                "after_pause_ms": timings(probe, calls, pause),
            }
            for name, probe in probes.items()
        }
        conn.execute("DROP TABLE wakeup")
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup", description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pause-ms", type=float, default=10.0, help="10 ms: the 100/s phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskq-wakeup-") as tmp:
        from taskq_core.embedded import EmbeddedServers

        with EmbeddedServers(Path(tmp) / "servers", durable=True) as servers:
            probes = run(servers.database_url, servers.redis_url, args.calls, args.pause_ms / 1000)
    print(f"| round trip | back to back p50 / p95 ms | after {args.pause_ms:g} ms idle |")
    print("|---|---:|---:|")
    for name, cell in probes.items():
        busy, idle = cell["back_to_back_ms"], cell["after_pause_ms"]
        print(
            f"| {name} | {busy['p50']:.3f} / {busy['p95']:.3f} "
            f"| {idle['p50']:.3f} / {idle['p95']:.3f} |"
        )
    result = {"date": datetime.now(UTC).isoformat(), "pause_ms": args.pause_ms, "probes": probes}
    path = report.save("wakeup", result)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
