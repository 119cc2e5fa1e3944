"""What checking an API key costs `POST /tasks/`: one API process under wrk, open against keyed.

    .venv/bin/python -m bench.apikey [--seconds 10] [--rounds 3] [--modes open,key]

Each round starts a fresh `taskq api` (one process) per mode, in turn, on the same PostgreSQL and
Redis (TASKQ_BENCH_DATABASE_URL / TASKQ_BENCH_REDIS_URL, else taskq's embedded pair, fsync on):
`open` has no key anywhere and sends none; `key` creates one submit key with `taskq keys create`
and sends it as `Authorization: Bearer`; `header` sends a key but creates none (the "before" of
code without keys); `base` is `header` with the API run from another source tree (`--base DIR`,
e.g. `git archive main | tar -x -C DIR`), so before and after alternate in one invocation. The
tasks table is emptied before each measurement.
Modes alternate so a busy machine weighs on both alike; the medians are what to compare.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx
import psycopg

from bench import http_load
from bench.servers import DATABASE_URL_ENV, REDIS_URL_ENV
from taskq_core.db import engines

BODY = '{"task_type": "FibonacciTask", "input_data": {"n": 10}, "priority": 4}'
DATABASE = "bench_apikey"
REDIS_DB = 7  # beside the bench's own 1-6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _taskq(*args: str, env: dict[str, str], **popen: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "taskq_core.cli", *args], env=env, **popen)  # type: ignore[call-overload,no-any-return]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(
    env: dict[str, str], database_url: str, mode: str, seconds: int, base: str | None
) -> tuple[float, float]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, task_attempts, api_keys RESTART IDENTITY")
    headers: dict[str, str] = {}
    cwd = None
    if mode == "base":  # the API from another tree: the current directory comes first on sys.path
        if base is None:
            raise SystemExit("mode base needs --base DIR")
        env = {**env, "PYTHONPATH": base}
        cwd = base
    if mode in ("header", "base"):  # a key sent, none created: what code without auth does
        headers["Authorization"] = "Bearer tq_" + "x" * 43
    if mode == "key":
        out = subprocess.run(
            [sys.executable, "-m", "taskq_core.cli", "keys", "create", "--scope", "submit"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        headers["Authorization"] = f"Bearer {out.stdout.strip()}"
    port = _free_port()
    api = _taskq("api", "--port", str(port), env=env, stdout=subprocess.DEVNULL, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit("the API did not start")
            time.sleep(0.05)
        check = httpx.post(
            f"{url}/tasks/", content=BODY, headers=headers | {"Content-Type": "application/json"}
        )
        if check.status_code != 201:
            raise SystemExit(f"{mode}: {check.status_code} {check.text}")
        http_load.post_for(f"{url}/tasks/", BODY, 1, headers)  # warm-up
        cpu = _cpu_seconds(api.pid)
        result = http_load.post_for(f"{url}/tasks/", BODY, seconds, headers)
        cpu = _cpu_seconds(api.pid) - cpu
    finally:
        api.terminate()
        api.wait(15)
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"{mode}: errors under load: {result}")
    # The API's own CPU per request depends far less on what else the machine runs than the rate.
    return float(result["count"]) / float(result["seconds"]), cpu / result["count"] * 1e6


def check_cost(database_url: str, calls: int = 200_000) -> float:
    """Microseconds of CPU one key check costs the API, with a warm cache."""
    import asyncio

    from taskq_core.api.auth import KeyRing
    from taskq_core.db.keys import new_token

    async def run() -> float:
        key = new_token()
        engine = engines.async_engine(database_url, pool_size=1)
        ring = KeyRing(engine, [key], ttl=3600)
        try:
            assert await ring.authenticate(key) is not None
            start = time.process_time()
            for _ in range(calls):
                await ring.authenticate(key)
            return (time.process_time() - start) / calls * 1e6
        finally:
            await engine.dispose()

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apikey", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="open,key", help="of open, key, header, base")
    parser.add_argument("--base", help="source tree the `base` mode runs the API from")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")

    base, redis_base = os.environ.get(DATABASE_URL_ENV), os.environ.get(REDIS_URL_ENV)
    embedded = None
    if not (base and redis_base):
        import tempfile
        from pathlib import Path

        from taskq_core.embedded import EmbeddedServers

        embedded = EmbeddedServers(Path(tempfile.mkdtemp(prefix="taskq-apikey-")), durable=True)
        embedded.start()
        base, redis_base = embedded.database_url, embedded.redis_url
    try:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        database_url = base.rsplit("/", 1)[0] + f"/{DATABASE}"
        engines.upgrade(database_url)
        env = {n: v for n, v in os.environ.items() if not n.startswith("TASKQ_") or "BENCH" in n}
        env.update(
            TASKQ_DATABASE_URL=database_url,
            TASKQ_REDIS_URL=redis_base.rsplit("/", 1)[0] + f"/{REDIS_DB}",
            TASKQ_LOG_LEVEL="WARNING",
        )
        rates: dict[str, list[float]] = {m: [] for m in modes}
        cpus: dict[str, list[float]] = {m: [] for m in modes}
        for round_ in range(args.rounds):
            for mode in modes:
                rate, cpu = _measure(env, database_url, mode, args.seconds, args.base)
                rates[mode].append(rate)
                cpus[mode].append(cpu)
                print(
                    f"round {round_ + 1} {mode}: {rate:,.0f} req/s, API {cpu:.0f} µs CPU/request",
                    flush=True,
                )
        print(f"one key check: {check_cost(database_url):.2f} µs CPU (warm cache)")
        for mode, values in rates.items():
            print(
                f"{mode}: median {statistics.median(values):,.0f} req/s "
                f"({min(values):,.0f}-{max(values):,.0f}), {http_load.CONNECTIONS} connections; "
                f"API CPU median {statistics.median(cpus[mode]):.0f} µs/request "
                f"({min(cpus[mode]):.0f}-{max(cpus[mode]):.0f})"
            )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
