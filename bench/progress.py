"""What one `ctx.progress` call costs a task, in a runner (throttled onto the pipe) and in the
worker's own loop (straight to the progress board).

python -m bench.progress [--calls 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from taskq_core.task import TaskContext
from taskq_core.worker.execution import Job
from taskq_core.worker.progress import ProgressBoard
from taskq_core.worker.reporting import JobReporter


def job() -> Job:
    return Job(1, "Bench", {}, 1, 1, 3, "bench")


def per_call(ctx: TaskContext, calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        ctx.progress(i, calls, "working")
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    calls = parser.parse_args().calls
    sent = 0
    null = os.open(os.devnull, os.O_WRONLY)

    def to_pipe(value: dict[str, object]) -> None:
        nonlocal sent
        sent += 1
        os.write(null, repr(value).encode())

    reporter = JobReporter(job(), to_pipe, threaded=True)
    runner = per_call(job().context(reporter), calls)
    reporter.end()
    print(f"runner: {runner * 1e6:.2f} µs per call; {sent} pipe messages for {calls:,} calls")

    async def in_loop() -> float:
        board = ProgressBoard(None, "bench", ())  # type: ignore[arg-type]  # never flushed here
        board.begin(1, 1)
        loop_reporter = JobReporter(job(), lambda v: board.report(1, v))
        return per_call(job().context(loop_reporter), calls)

    print(f"async task: {asyncio.run(in_loop()) * 1e6:.2f} µs per call (then one write / 0.25 s)")


if __name__ == "__main__":
    main()
