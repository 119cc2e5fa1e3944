"""The benchmark runs end to end at a tiny size, so it cannot rot (`make bench` measures speed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.venv import ensure_venv

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ["taskq", "celery-redis", "celery-pg", "rq", "dramatiq", "procrastinate"]
COLUMNS = [
    "enqueue_http",
    "enqueue_python",
    "enqueue_threads",
    "enqueue_async",
    "bulk",
    "drain_noop",
    "drain_fib",
    "first_done_s",
    "p50",
    "p95",
    "p99",
]
# Cells every system must fill with a number; the others may give a reason ("no HTTP API").
MEASURED = ["enqueue_python", "drain_noop", "drain_fib", "first_done_s", "p50", "p95", "p99"]


def _quick_bench(results: Path, *options: str) -> tuple[str, dict[str, Any]]:
    """`python -m bench --quick` with `options`, on its own servers: its output and its JSON."""
    python = ensure_venv()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    proc = subprocess.run(
        [str(python), "-m", "bench", "--quick", "--results", str(results), *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [path] = results.glob("*.json")
    document: dict[str, Any] = json.loads(path.read_text())
    return proc.stdout, document


@pytest.mark.timeout(900)  # a first run creates .venv-bench (peers installed from PyPI)
def test_quick_bench_fills_every_cell(tmp_path: Path) -> None:
    stdout, document = _quick_bench(tmp_path)

    cells = document["summary"]["cells"]
    assert list(cells) == SYSTEMS
    for system in SYSTEMS:
        assert sorted(cells[system]) == sorted(COLUMNS)
        for column in COLUMNS:
            cell = cells[system][column]
            assert cell["text"].strip(), (system, column)
            if "median" in cell:
                assert cell["median"] > 0, (system, column, cell)
            else:
                assert cell["reasons"], (system, column, cell)
        for column in MEASURED:
            assert "median" in cells[system][column], (system, column, cells[system][column])
    for column in ("enqueue_http", "enqueue_threads", "enqueue_async"):
        assert "median" in cells["taskq"][column], cells["taskq"][column]
    ratios = document["summary"]["taskq_ratio_to_best_peer"]
    assert all(ratios[c]["text"] for c in COLUMNS)

    for label in document["systems"].values():
        assert label in stdout
    assert "taskq ÷ best peer" in stdout
    assert document["machine"]["nproc"] >= 1
    assert document["versions"]["celery-redis"]["celery"].startswith("5.")
    assert document["servers"]["postgresql"]["fsync"] == "on"
    latency = next(r for r in document["raw"] if r["phase"] == "latency")
    assert len(latency["raw"]["latencies_ms"]) == latency["raw"]["samples"]


@pytest.mark.timeout(900)
def test_the_base_row_runs_the_other_checkout(tmp_path: Path) -> None:
    # `--taskq-base` once ran only the session's own calls from the other checkout: its API and
    # workers, started with `python -m` from this checkout, ran this one. A copy whose log lines
    # say BASE shows which code the base row's worker ran.
    base = tmp_path / "base"
    shutil.copytree(
        ROOT / "taskq_core", base / "taskq_core", ignore=shutil.ignore_patterns("__pycache__")
    )
    logs = base / "taskq_core" / "logs.py"
    source = logs.read_text()
    assert 'TEXT_FORMAT = "%(asctime)s' in source
    logs.write_text(source.replace('TEXT_FORMAT = "%(asctime)s', 'TEXT_FORMAT = "BASE %(asctime)s'))
    _, document = _quick_bench(
        tmp_path / "results",
        *("--peers", "taskq-base", "--taskq-base", str(base), "--phases", "drain_noop"),
    )
    worker_log = Path(document["logs"]) / "taskq-worker-0.log"
    lines = [line for line in worker_log.read_text().splitlines() if " taskq.worker: " in line]
    assert lines
    assert all(line.startswith("BASE ") for line in lines), lines[:5]
