"""What 1,000 requests waiting on their tasks cost one API process, and how soon they are woken.

python -m bench.waiters [--waiters 1000]

Queues N tasks due in 40 s and starts one worker, opens N concurrent `GET /tasks/{id}?wait=60`,
measures the API process's memory and CPU while they wait, then each waiter's wake-up when the
tasks run: from the task's `finished_at` (PostgreSQL's clock, the same machine's) to the response,
split at the moment a subscriber of this bench saw the announcement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.memory import rss_kib
from bench.peers.taskq import write_site
from taskq_core import broker
from taskq_core.db import engines
from taskq_core.embedded.ports import free_port
from taskq_core.processes import child_env

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
DELAY = 40.0  # seconds until the tasks are due


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def settled(pid: int) -> float:
    """Wait until `pid` has used under 20 ms of CPU in a second; its CPU seconds then."""
    before = cpu_seconds(pid)
    while True:
        await asyncio.sleep(1)
        now = cpu_seconds(pid)
        if now - before < 0.02:
            return now
        before = now


async def listen(redis_url: str, announced: dict[int, float]) -> None:
    client = broker.connect(redis_url, blocking=True)
    try:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(broker.status_channel("default"))
            async for message in pubsub.listen():
                if message["type"] == "message":
                    now = time.time()
                    for task_id, status in broker.decode_statuses(message["data"]):
                        if status == "completed":
                            announced[task_id] = now
    finally:
        await client.aclose()


async def measure(
    url: str, redis_url: str, api_pid: int, count: int, start_worker: Any
) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        # Due in DELAY seconds: time to park every waiter, with the worker already running and
        # idle, so the wake-up is measured on a quiet machine, not during the worker's start.
        task = {"task_type": "NoopTask", "input_data": {}, "delay_seconds": DELAY}
        body = {"tasks": [task] * count}
        created = (await client.post("/tasks/batch", json=body)).json()["tasks"]
        ids = [t["id"] for t in created]
        worker = start_worker()
        rss_before, cpu_before = rss_kib(api_pid), cpu_seconds(api_pid)
        answered: dict[int, float] = {}

        async def wait(task_id: int) -> dict[str, Any]:
            # Raw HTTP/1.1 on a socket of its own: httpx's own cost per response, times a
            # thousand on two shared cores, would otherwise be most of what is measured.
            reader, writer = await asyncio.open_connection(host, port)
            request = f"GET /tasks/{task_id}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            answered[task_id] = time.time()
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            writer.close()
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"{head!r}: {body[:300]!r}")
            result: dict[str, Any] = json.loads(body)
            return result

        waiting = [asyncio.create_task(wait(i)) for i in ids]
        parked_cpu = await settled(api_pid)  # every request sent and parked
        rss_waiting = rss_kib(api_pid)
        await asyncio.sleep(5)  # an idle spell with all of them parked
        idle_cpu = cpu_seconds(api_pid) - parked_cpu
        assert not answered, f"{len(answered)} answered before their tasks ran"
        cpu_at_start = cpu_seconds(api_pid)
        announced: dict[int, float] = {}
        listener = asyncio.create_task(listen(redis_url, announced))
        try:
            bodies = await asyncio.gather(*waiting)
        finally:
            worker.terminate()
            worker.wait(30)
            listener.cancel()
        wake_cpu = cpu_seconds(api_pid) - cpu_at_start
    latencies = sorted(
        (answered[b["id"]] - datetime.fromisoformat(b["finished_at"]).timestamp()) * 1000
        for b in bodies
    )
    # Where the time goes: commit to announcement (the worker), announcement to answer (the API
    # and this client).
    to_announce = sorted(
        (announced[b["id"]] - datetime.fromisoformat(b["finished_at"]).timestamp()) * 1000
        for b in bodies
        if b["id"] in announced
    )
    to_answer = sorted(
        (answered[b["id"]] - announced[b["id"]]) * 1000 for b in bodies if b["id"] in announced
    )
    statuses = {b["status"] for b in bodies}

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {
        "waiters": count,
        "statuses": sorted(statuses),
        "api_rss_kib_before": rss_before,
        "api_rss_kib_waiting": rss_waiting,
        "api_rss_kib_per_waiter": round((rss_waiting - rss_before) / count, 1),
        "api_cpu_s_parking_all": round(parked_cpu - cpu_before, 3),
        "api_cpu_s_idle_5s_while_parked": round(idle_cpu, 3),
        "api_cpu_s_waking_all": round(wake_cpu, 3),
        "wake_ms_p50": pct(0.5),
        "wake_ms_p95": pct(0.95),
        "wake_ms_p99": pct(0.99),
        "wake_ms_max": round(latencies[-1], 1),
        "wake_ms_mean": round(statistics.fmean(latencies), 1),
        "finished_to_announced_ms_p50": round(statistics.median(to_announce), 1),
        "announced_to_answered_ms_p50": round(statistics.median(to_answer), 1),
        "announced_to_answered_ms_max": round(to_answer[-1], 1),
    }


def run(database_url: str, redis_url: str, count: int, site: Path) -> dict[str, Any]:
    engines.upgrade(database_url)
    env = child_env(database_url, redis_url)
    env["PYTHONPATH"] = f"{site}:{REPO}"
    env["TASKQ_LOG_LEVEL"] = "WARNING"
    port = free_port()
    taskq = [sys.executable, "-m", "taskq_core.cli"]
    api = subprocess.Popen([*taskq, "api", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit("the API did not start")
            time.sleep(0.1)

        def start_worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen([*taskq, "worker", "--concurrency", "64"], env=env)

        result = asyncio.run(measure(url, redis_url, api.pid, count, start_worker))
    finally:
        api.terminate()
        api.wait(30)
    load = os.getloadavg()
    return {"date": datetime.now(UTC).isoformat(), "load_average_1_5": load[:2], **result}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.waiters", description=__doc__)
    parser.add_argument("--waiters", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskq-waiters-") as tmp:
        from taskq_core.embedded import EmbeddedServers

        site = write_site(Path(tmp) / "site")
        with EmbeddedServers(Path(tmp) / "servers", durable=True) as servers:
            result = run(servers.database_url, servers.redis_url, args.waiters, site)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"written to {report.save('waiters', result)}")


if __name__ == "__main__":
    main()
