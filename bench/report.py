"""The results: medians with spread per system and column, taskq's ratios, the table, the JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measure import Spread

RESULTS = Path(__file__).resolve().parent / "results"  # git-ignored

TASKQ = "taskq"


@dataclass(frozen=True)
class Column:
    phase: str
    value: str  # key in the phase's values
    title: str
    higher_is_better: bool = True
    peers_phase: str = ""  # the peers' phase taskq's figure is compared with (default: same)

    @property
    def key(self) -> str:
        return self.phase if self.value == "rate" else self.value

    @property
    def compared_with(self) -> str:
        return self.peers_phase or self.phase


COLUMNS = (
    Column("enqueue_http", "rate", "enqueue HTTP, 1 req/task", peers_phase="enqueue_python"),
    Column("enqueue_python", "rate", "enqueue Python, 1 call/task"),
    Column("enqueue_threads", "rate", "enqueue Python, 32 threads"),
    Column("enqueue_async", "rate", "enqueue async, 32 tasks", peers_phase="enqueue_threads"),
    Column("bulk", "rate", "bulk enqueue"),
    Column("drain_noop", "rate", "drain no-op"),
    Column("drain_fib", "rate", "drain fib(20)"),
    Column("drain_noop", "first_done_s", "first task done s", higher_is_better=False),
    Column("latency", "p50", "start p50 ms", higher_is_better=False),
    Column("latency", "p95", "start p95 ms", higher_is_better=False),
    Column("latency", "p99", "start p99 ms", higher_is_better=False),
)


def columns(phases: str = "") -> tuple[Column, ...]:
    """The columns of the phases run (`phases`: comma-separated, empty for all)."""
    chosen = {p.strip() for p in phases.split(",") if p.strip()}
    return tuple(c for c in COLUMNS if not chosen or c.phase in chosen)


def _number(value: float, column: Column) -> str:
    if column.value == "rate":
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _spread_text(spread: Spread, column: Column, ratio: bool = False) -> str:
    fmt = (lambda v: f"{v:.2f}x") if ratio else (lambda v: _number(v, column))
    if spread.runs == 1:
        return fmt(spread.median)
    return f"{fmt(spread.median)} ({fmt(spread.low)}-{fmt(spread.high)})"


Results = dict[tuple[str, int, str], dict[str, Any]]  # (system, run, phase) -> phase result


def _value(results: Results, key: tuple[str, int, str], value: str) -> float | None:
    result = results.get(key)
    if result is None or result.get("status") != "ok":
        return None
    number: float = result["values"][value]
    return number


def summarize(
    records: list[dict[str, Any]], systems: list[str], runs: int, phases: str = ""
) -> dict[str, Any]:
    """Per system and column: median, min, max, the cell's text; then taskq's ratios."""
    results: Results = {
        (r["system"], r["run"], r["phase"]): r for r in records if r["phase"] != "_meta"
    }
    cells: dict[str, dict[str, Any]] = {}
    for system in systems:
        row = cells[system] = {}
        for column in columns(phases):
            values, reasons = [], []
            for run in range(1, runs + 1):
                result = results.get((system, run, column.phase))
                if result is None:
                    reasons.append("missing: the session ended early")
                elif result["status"] == "ok":
                    values.append(result["values"][column.value])
                else:
                    reasons.append(str(result["reason"]))
            cell: dict[str, Any] = {"values": values, "reasons": reasons}
            if values:
                spread = Spread.of(values)
                cell.update(median=spread.median, low=spread.low, high=spread.high)
                cell["text"] = _spread_text(spread, column)
                if reasons:
                    cell["text"] += f" [{len(reasons)} of {runs} runs: {reasons[0]}]"
            else:
                cell["text"] = reasons[0] if reasons else "missing"
            row[column.key] = cell
    ratios: dict[str, Any] = {}
    peers = [s for s in systems if s != TASKQ]
    if TASKQ in systems and peers:
        for column in columns(phases):
            per_run, best_peers = [], []
            for run in range(1, runs + 1):
                ours = _value(results, (TASKQ, run, column.phase), column.value)
                theirs = {
                    p: v
                    for p in peers
                    if (v := _value(results, (p, run, column.compared_with), column.value))
                    is not None
                }
                if ours is None or not theirs:
                    continue
                pick = max if column.higher_is_better else min
                best = pick(theirs, key=lambda p: theirs[p])
                per_run.append(ours / theirs[best])
                best_peers.append(best)
            if per_run:
                spread = Spread.of(per_run)
                best = Counter(best_peers).most_common(1)[0][0]
                ratios[column.key] = {
                    "ratios": per_run,
                    "best_peers": best_peers,
                    "median": spread.median,
                    "text": f"{_spread_text(spread, column, ratio=True)} vs {best}",
                }
            else:
                ratios[column.key] = {"text": "n/a (no taskq or peer figure)"}
    return {"cells": cells, "taskq_ratio_to_best_peer": ratios}


def table(summary: dict[str, Any], labels: dict[str, str], sizes: dict[str, Any]) -> str:
    """The markdown table: one row per system, then taskq ÷ best peer."""
    shown = columns(sizes.get("phases", ""))
    titles = [c.title for c in shown]
    rows = [
        [labels[system]] + [row[c.key]["text"] for c in shown]
        for system, row in summary["cells"].items()
    ]
    ratios = summary["taskq_ratio_to_best_peer"]
    if ratios:
        rows.append(["**taskq ÷ best peer**"] + [ratios[c.key]["text"] for c in shown])
    header = ["system", *titles]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(titles),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    runs = sizes["runs"]
    notes = [
        f"Rates in tasks/s, latencies in ms; median of {runs} run(s)"
        + (", (min-max) across runs." if runs > 1 else "."),
        f"Enqueue and drain no-op: {sizes['tasks']:,} tasks; drain fib(20): "
        f"{sizes['fib_tasks']:,} tasks; latency: {sizes['latency_rate']:g} tasks/s for "
        f"{sizes['latency_seconds']:g} s, enqueue call to the task's first line. HTTP enqueue: "
        f"{sizes['http_seconds']} s of POST /tasks/ over 32 connections.",
        "Drains count from starting the workers to each system's own record of the last task.",
        "Ratios: taskq's figure over the best peer's in the same run (HTTP enqueue against the "
        "peers' Python enqueue); rates above 1x and latencies below 1x favour taskq.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=str))
    return path


def save(kind: str, document: dict[str, Any]) -> Path:
    """Write a side measurement (`scale`, `memory`, `wakeup`) to results/<kind>-<time>.json."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return write_json(RESULTS / f"{kind}-{stamp}.json", document)
