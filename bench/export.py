"""ExportTask's speed and memory against `psql \\copy` on the same table and query.

python -m bench.export [--rows 1000000,3000000] [--formats csv,parquet] [--database-url URL]

Each export runs in a fresh process (the code a runner runs: ExportTask.run writing to a local
artifact folder); the clock covers connect, count, rows and the artifact's close; memory is
that process's peak RSS (ru_maxrss), against its RSS once everything is imported. `psql
\\copy` writes the same query's CSV to a file; its peak RSS comes from wait4. The table is made
once per row count (`export_bench`, 7 columns of common types) in a database of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import report

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "taskq_export_bench"
QUERY = "SELECT * FROM export_bench WHERE id <= %(n)s ORDER BY id"
TABLE = """
CREATE TABLE IF NOT EXISTS export_bench (
    id bigint PRIMARY KEY, name text, amount numeric(12, 2), ratio double precision,
    flag boolean, created timestamptz, day date
)
"""
FILL = """
INSERT INTO export_bench
SELECT i, 'customer ' || i || ', "north"', (i %% 100000) * 1.25, i / 7.0, i %% 2 = 0,
       timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i), date '2026-01-01' + i %% 365
FROM generate_series(%(start)s, %(end)s) AS i
"""


def bench_database(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            pass
        else:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"


def ensure_rows(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLE)
        have = conn.execute("SELECT coalesce(max(id), 0) FROM export_bench").fetchone()
        start = (have[0] if have else 0) + 1
        if start > rows:
            return
        print(f"filling export_bench up to {rows:,} rows...", file=sys.stderr)
        conn.execute(FILL, {"start": start, "end": rows})
        conn.execute("VACUUM ANALYZE export_bench")


def child(url: str, rows: int, fmt: str, store: str) -> dict[str, Any]:
    """One export in this process: what a runner does for an ExportTask."""
    os.environ["TASKQ_EXPORT_SOURCES"] = json.dumps({"bench": url})
    queries = {"bench": {"source": "bench", "sql": QUERY, "params": {"n": {"type": "integer"}}}}
    os.environ["TASKQ_EXPORT_QUERIES"] = json.dumps(queries)
    from taskq_export import build_task

    from taskq_core import TaskContext
    from taskq_core.artifacts import AttemptArtifacts

    artifacts = AttemptArtifacts(store, 1, 1)
    reports = 0

    class Reporter:
        def progress(self, done: float, total: float | None, message: str | None) -> None:
            nonlocal reports
            reports += 1

        def artifact(self, name: str, content_type: str) -> Any:
            return artifacts.open(name, content_type)

    task_class = build_task()
    data = task_class.Input.model_validate({"query": "bench", "params": {"n": rows}, "format": fmt})
    ctx = TaskContext(1, "ExportTask", 1, 1, 3, "bench", reporter=Reporter())
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    output = task_class().run(data, ctx)
    (record,) = artifacts.published()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": output.rows,
        "file_bytes": record["size"],
        "baseline_rss_kib": baseline,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "progress_reports": reports,
    }


def run_child(url: str, rows: int, fmt: str) -> dict[str, Any]:
    store = tempfile.mkdtemp(prefix="taskq-export-bench-")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.export", "--child", fmt, "--rows", str(rows),
             "--database-url", url, "--store", store],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.stdout)
        return result
    finally:
        shutil.rmtree(store, ignore_errors=True)


def run_psql(url: str, rows: int, psql: str) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="taskq-export-bench-")
    target = Path(folder) / "psql.csv"
    query = QUERY.replace("%(n)s", str(rows))
    command = f"\\copy ({query}) TO '{target}' CSV HEADER"
    try:
        started = time.perf_counter()
        proc = subprocess.Popen([psql, url, "-X", "-q", "-c", command])
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"psql failed ({proc.returncode})")
        return {
            "seconds": seconds,
            "rows": rows,
            "file_bytes": target.stat().st_size,
            "peak_rss_kib": usage.ru_maxrss,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,3000000")
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--database-url", default=os.environ.get("TASKQ_BENCH_DATABASE_URL"))
    parser.add_argument("--psql", default=shutil.which("psql") or "psql")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.database_url, int(args.rows), args.child, args.store)))
        return
    url = bench_database(args.database_url or DEFAULT_URL)
    counts = [int(n) for n in args.rows.split(",")]
    ensure_rows(url, max(counts))
    results: list[dict[str, Any]] = []
    for rows in counts:
        for fmt in ["psql", *args.formats.split(",")]:
            result = run_psql(url, rows, args.psql) if fmt == "psql" else run_child(url, rows, fmt)
            result.update(format=fmt, rows_per_second=rows / result["seconds"])
            results.append(result)
            print(
                f"{rows:>11,} rows {fmt:8} {result['seconds']:7.1f} s "
                f"{result['rows_per_second']:>11,.0f} rows/s "
                f"peak RSS {result['peak_rss_kib'] / 1024:7.1f} MiB "
                f"(after imports {result.get('baseline_rss_kib', 0) / 1024:5.1f} MiB) "
                f"file {result['file_bytes'] / 2**20:8.1f} MiB",
                flush=True,
            )
    saved = report.save("export", {"at": datetime.now(UTC).isoformat(), "results": results})
    print(f"raw numbers: {saved}")


if __name__ == "__main__":
    main()
