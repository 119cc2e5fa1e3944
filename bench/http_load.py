"""HTTP load for one-request-per-task enqueue: wrk with a Lua script, else a Python client."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CONNECTIONS = 32
REQUEST_TIMEOUT = 10  # seconds for one request

# wrk runs for a fixed time (its main thread sleeps that long whatever the Lua script does), so
# the HTTP phase is timed, not counted.
LUA = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def post_for(
    url: str, body: str, seconds: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST `body` to `url` for `seconds` over 32 connections: count, seconds, errors, client.
    `headers` are sent besides Content-Type (an Authorization header, say)."""
    wrk = wrk_path()
    if wrk is not None:
        return _wrk(wrk, url, body, seconds, headers or {})
    return asyncio.run(_python(url, body, seconds, headers or {}))


def _wrk(wrk: str, url: str, body: str, seconds: int, headers: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
        script.write_text(LUA.format(body=body) + extra)
        argv = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s"]
        argv += [f"--timeout={REQUEST_TIMEOUT}s", "-s", str(script), url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "count": int(done.group(1)),
        "seconds": float(done.group(2)) * unit,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
        "client": f"wrk -t1 -c{CONNECTIONS}",
    }


async def _python(url: str, body: str, seconds: int, extra: dict[str, str]) -> dict[str, Any]:
    count = non_2xx = 0
    limits = httpx.Limits(max_connections=CONNECTIONS)
    headers = {"Content-Type": "application/json", **extra}
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT) as client:
        start = time.perf_counter()
        end = start + seconds

        async def connection() -> None:
            nonlocal count, non_2xx
            while time.perf_counter() < end:
                response = await client.post(url, content=body, headers=headers)
                count += 1
                non_2xx += not response.is_success

        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - start
    return {
        "count": count,
        "seconds": elapsed,
        "non_2xx": non_2xx,
        "socket_errors": "",
        "client": f"python httpx, {CONNECTIONS} connections (wrk not installed: the client, "
        "not the server, may be the limit)",
    }
