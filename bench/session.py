"""One system, one run, in a process of its own: `python -m bench.session SPEC.json`.

The parent bounds the whole session with a timeout and kills what it leaves behind; inside,
every phase has its own bound, so a hung peer fails one cell, not the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from bench import peers, work
from bench.config import SessionSpec, Sizes
from bench.cpu import Meter
from bench.measure import PhaseTimeout, paced, percentile, wait_for_count
from bench.peers.base import Context, Kind, Peer, Unsupported
from bench.procs import Processes

PHASES = (
    "enqueue_http",
    "enqueue_python",
    "enqueue_threads",
    "enqueue_async",
    "bulk",
    "drain_noop",
    "drain_fib",
    "latency",
)
THREADS = 32  # callers at once in enqueue_threads and enqueue_async
WARMUP_STAMPS = 5  # sent before the latency phase, to know the workers are up and connected
Result = dict[str, Any]


def ok(values: dict[str, float], **raw: Any) -> Result:
    return {"status": "ok", "values": values, "raw": raw}


class Session:
    def __init__(self, spec: SessionSpec, peer: Peer) -> None:
        self.spec = spec
        self.sizes: Sizes = spec.sizes
        self.peer = peer
        self.stamps = redis.Redis.from_url(spec.stamps_url, socket_timeout=10)
        self.workers_up = False

    def deadline(self) -> float:
        return time.perf_counter() + self.sizes.phase_timeout

    def fresh(self) -> None:
        """No workers, empty queues: nobody measures someone else's backlog."""
        self.peer.stop_workers()
        self.workers_up = False
        self.peer.reset()

    def check_queued(self, expected: int) -> None:
        queued = self.peer.queued()
        if queued != expected:
            raise RuntimeError(f"{queued} tasks queued, expected {expected}")

    # ---- phases ------------------------------------------------------------------------------

    def enqueue_http(self) -> Result:
        self.fresh()
        meter = Meter(self.peer.ctx.database_url, self.spec.stamps_url)
        meter.start()
        load = self.peer.enqueue_http(self.sizes.http_seconds)
        cpu = meter.stop([], max(1, load["count"]))  # PostgreSQL and Redis; the API's not here
        if load["non_2xx"]:
            raise RuntimeError(f"{load['non_2xx']} of {load['count']} requests were not 2xx")
        queued = self.peer.queued()
        if queued < load["count"]:
            raise RuntimeError(f"{load['count']} requests answered but {queued} tasks queued")
        return ok(
            {"rate": load["count"] / load["seconds"]}, **load, queued=queued, cpu_us_per_task=cpu
        )

    def enqueue_python(self) -> Result:
        self.fresh()
        n, send, deadline = self.sizes.tasks, self.peer.sender("noop"), self.deadline()
        start = time.perf_counter()
        for i in range(n):
            send()
            if i % 100 == 0 and time.perf_counter() > deadline:
                raise PhaseTimeout("enqueue", self.sizes.phase_timeout, i)
        seconds = time.perf_counter() - start
        self.check_queued(n)
        return ok({"rate": n / seconds}, count=n, seconds=seconds, calls="one per task, 1 thread")

    def enqueue_threads(self) -> Result:
        """THREADS threads calling the Python enqueue at once, n calls in all."""
        self.fresh()
        n, send = self.sizes.tasks, self.peer.sender("noop")
        meter = Meter(self.peer.ctx.database_url, self.spec.stamps_url)
        meter.start()

        def calls(count: int) -> None:
            for _ in range(count):
                send()

        shares = [n // THREADS + (i < n % THREADS) for i in range(THREADS)]
        start = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(calls, share) for share in shares]:
                future.result(timeout=self.sizes.phase_timeout)
        seconds = time.perf_counter() - start
        self.check_queued(n)
        cpu = meter.stop([], n)
        return ok({"rate": n / seconds}, count=n, seconds=seconds, cpu_us_per_task=cpu)

    def enqueue_async(self) -> Result:
        """THREADS asyncio tasks calling the system's async enqueue at once, n calls in all."""
        self.fresh()
        n = self.sizes.tasks
        seconds = self.peer.enqueue_async("noop", n, THREADS)
        self.check_queued(n)
        return ok({"rate": n / seconds}, count=n, seconds=seconds)

    def bulk(self) -> Result:
        self.fresh()
        n = self.sizes.tasks
        start = time.perf_counter()
        self.peer.enqueue_bulk("noop", n)
        seconds = time.perf_counter() - start
        self.check_queued(n)
        return ok({"rate": n / seconds}, count=n, seconds=seconds)

    def drain(self, kind: Kind, n: int) -> Result:
        self.fresh()
        self.peer.fill(kind, n)
        self.check_queued(n)
        meter = Meter(self.peer.ctx.database_url, self.spec.stamps_url)
        meter.start()
        start = time.perf_counter()
        self.peer.start_workers()
        self.workers_up = True

        def progress() -> int:
            self.peer.ctx.procs.check()
            return self.peer.done()

        try:
            drained = wait_for_count(progress, n, self.sizes.phase_timeout, f"drain {kind}", start)
        except Exception as exc:
            self.workers_up = False  # busy with a backlog: no idle workers for the latency phase
            failed = self.peer.failed()
            if failed:
                raise RuntimeError(f"{failed} tasks failed") from exc
            raise
        cpu = meter.stop((p.pid for p in self.peer.ctx.procs.running), n)
        return ok(
            {"rate": drained.rate, "first_done_s": drained.first_done_seconds},
            count=n,
            seconds=drained.seconds,
            steady_rate=drained.steady_rate,
            cpu_us_per_task=cpu,
            clock="from starting the workers to the system's own record of the last task",
        )

    def drain_noop(self) -> Result:
        return self.drain("noop", self.sizes.tasks)

    def drain_fib(self) -> Result:
        return self.drain("fib", self.sizes.fib_tasks)

    def latency(self) -> Result:
        if not self.workers_up:  # the fib drain failed: start from a clean, idle system
            self.fresh()
            self.peer.start_workers()
            self.workers_up = True
        key = work.STAMPS_KEY
        self.stamps.delete(key)
        send = self.peer.stamp_sender()
        for _ in range(WARMUP_STAMPS):
            send(time.time())
        wait_for_count(lambda: int(self.stamps.llen(key)), WARMUP_STAMPS, 60.0, "warm-up")
        time.sleep(0.5)  # idle workers, as a quiet system has
        self.stamps.delete(key)
        rate, seconds = self.sizes.latency_rate, self.sizes.latency_seconds
        calls_ms: list[float] = []  # how long the enqueue call itself took: the rest is pickup

        def timed_send() -> None:
            t0 = time.time()
            send(t0)
            calls_ms.append((time.time() - t0) * 1000)

        calls, elapsed = paced(rate, seconds, timed_send, self.deadline())
        wait_for_count(lambda: int(self.stamps.llen(key)), calls, 60.0, "latency stamps")
        samples = []
        for entry in self.stamps.lrange(key, 0, -1):
            t0, started = (float(x) for x in entry.split())
            samples.append((started - t0) * 1000)
        return ok(
            {q: percentile(samples, n) for q, n in (("p50", 50), ("p95", 95), ("p99", 99))},
            samples=len(samples),
            sent_per_second=calls / elapsed,
            max_ms=max(samples),
            enqueue_call_ms={f"p{q}": percentile(calls_ms, q) for q in (50, 95, 99)},
            latencies_ms=[round(s, 3) for s in samples],
        )


def guarded(name: str, phase: Callable[[], Result]) -> Result:
    """Run one phase; whatever goes wrong becomes the cell's reason."""
    try:
        return phase()
    except Unsupported as exc:
        return {"status": "n/a", "reason": str(exc)}
    except PhaseTimeout as exc:
        return {"status": "timeout", "reason": f"timeout (>{exc.seconds:.0f}s)", "done": exc.done}
    except Exception as exc:
        traceback.print_exc()
        return {"status": "error", "reason": f"error: {type(exc).__name__}: {exc}"[:300]}


def summary(result: Result) -> str:
    if result["status"] != "ok":
        return str(result["reason"])
    return ", ".join(f"{k} {v:,.1f}" for k, v in result["values"].items())


def versions(peer: Peer) -> dict[str, str]:
    found = {}
    for dist in peer.distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def taskq_source() -> str:
    """A digest of the taskq_core source this session ran: other people may edit it mid-run."""
    import taskq_core

    digest = hashlib.sha256()
    for path in sorted(Path(taskq_core.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv: list[str]) -> int:
    spec = SessionSpec.load(Path(argv[0]))
    os.environ.update(spec.env)  # before the peer module reads it at import
    logs = Path(spec.logs)
    procs = Processes(logs, Path(spec.pgid_file))
    ctx = Context(
        database_url=spec.database_url,
        redis_urls=spec.redis_urls,
        stamps_url=spec.stamps_url,
        env=dict(os.environ),
        logs=logs,
        procs=procs,
        options={**spec.options, **vars(spec.sizes)},
    )
    with open(spec.output, "a") as out:

        def emit(phase: str, record: dict[str, Any]) -> None:
            where = {"system": spec.system, "run": spec.run, "phase": phase}
            out.write(json.dumps({**where, **record}) + "\n")
            out.flush()

        try:
            peer = peers.load(spec.system)(ctx)
            peer.prepare()
        except Exception as exc:
            traceback.print_exc()
            for phase in PHASES:
                emit(phase, {"status": "error", "reason": f"set-up failed: {exc}"[:300]})
            return 1
        session = Session(spec, peer)
        chosen = [p.strip() for p in spec.sizes.phases.split(",") if p.strip()] or PHASES
        try:
            for phase in (p for p in PHASES if p in chosen):
                began = time.perf_counter()
                result = guarded(phase, getattr(session, phase))
                took = time.perf_counter() - began
                emit(phase, {**result, "phase_seconds": round(took, 2)})
                line = f"  run {spec.run}  {spec.system:14} {phase:15} {summary(result)}"
                print(f"{line}  [{took:.1f}s]", flush=True)
            knobs = peer.knobs()
            label = f"{peer.label}: `{knobs['worker']}`" if "worker" in knobs else peer.label
            meta = {"label": label, "knobs": knobs, "versions": versions(peer)}
            if spec.system == "taskq":
                meta["taskq_source"] = taskq_source()
            emit("_meta", meta)
        finally:
            peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
