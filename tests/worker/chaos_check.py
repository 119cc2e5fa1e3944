"""The chaos run's checker: reads back every task and attempt and holds them to the promise, then
prints the summary table."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import Servers
from tests.worker.chaos import FAULT_ERRORS, KIND_SPECS, Fault, Ledger, fingerprint
from tests.worker.faults import Execution


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, how it ended)
    explained: Counter[str] = field(default_factory=Counter)  # what a fault explains, by kind

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


def check(
    servers: Servers, ledger: Ledger, executions: list[Execution], faults: list[Fault]
) -> Verdict:
    v = Verdict()
    tasks = {
        row[0]: row
        for row in servers.sql("SELECT id, status, attempts, error, task_type FROM tasks")
    }
    history: dict[int, list[tuple[Any, ...]]] = {}
    for row in servers.sql(
        "SELECT task_id, attempt, outcome, worker_id, started_at, finished_at "
        "FROM task_attempts ORDER BY id"
    ):
        history.setdefault(row[0], []).append(row)
    crashed_postgres = any(f.kind == "crash_postgres" for f in faults)

    # Every 201 has its row; rows no 201 accounts for are twins of a submission whose answer was
    # lost (the client retried without a key), never more of them than such submissions.
    for task_id in ledger.kinds:
        if task_id not in tasks:
            v.problem(f"task {task_id} was answered 201 but has no row")
    twins = set(tasks) - set(ledger.kinds)
    if len(twins) > ledger.uncertain:
        v.problem(f"{len(twins)} rows without a 201, only {ledger.uncertain} uncertain submits")
    v.explained["twin of a submission whose answer was lost"] = len(twins)

    for task_id, (_, status, attempts, error, _) in tasks.items():
        if status not in ("completed", "failed", "cancelled"):
            v.problem(f"task {task_id} is still {status}")
            continue
        records = history.get(task_id, [])
        counted = sorted(r[1] for r in records if r[2] != "handed_back")
        if counted != list(range(1, attempts + 1)):
            v.problem(f"task {task_id}: attempts {attempts}, history {[r[1:4] for r in records]}")
        finals = [r for r in records if r[2] in ("completed", "failed", "cancelled")]
        if len(finals) > 1:
            v.problem(f"task {task_id}: {len(finals)} final attempt records")
        _concurrency(v, task_id, records)
        kind = ledger.kinds.get(task_id)
        if kind is not None:
            _outcome(v, ledger, task_id, kind, status, error)

    # Every start a task saw has its attempt record, unless a crash of PostgreSQL took the claim
    # with it (claims commit without waiting for their WAL flush): the same attempt ran again.
    runs = Counter(e.task_id for e in executions)
    for task_id, count in runs.items():
        recorded = len(history.get(task_id, []))
        if count > recorded:
            if crashed_postgres:
                v.explained["ran again after a PostgreSQL crash lost its claim"] += count - recorded
            else:
                v.problem(f"task {task_id}: {count} runs but {recorded} attempt records")
    return v


def _concurrency(v: Verdict, task_id: int, records: list[tuple[Any, ...]]) -> None:
    """An attempt starts only after the one before ended, unless that one's lease expired (its
    worker, paused or cut off, may still have been running it)."""
    for before, after in itertools.pairwise(records):
        if after[4] is not None and before[5] is not None and after[4] < before[5]:
            if before[2] == "lost":
                v.explained["ran beside an attempt whose lease expired"] += 1
            else:
                v.problem(f"task {task_id}: attempt {after[1]} started before {before[1]} ended")


def _outcome(v: Verdict, ledger: Ledger, task_id: int, kind: str, status: str, error: Any) -> None:
    expected = KIND_SPECS[kind][3]
    error_type = (error or {}).get("type")
    v.outcomes[(kind, status)] += 1
    if status == expected:
        if kind == "timeout" and error_type not in ("TaskTimeoutError", "LeaseExpiredError"):
            v.problem(f"task {task_id} (timeout) failed with {error_type}")
        return
    if status == "failed" and error_type in FAULT_ERRORS:
        v.explained[f"{kind} failed by a fault ({error_type})"] += 1
        return
    answer = ledger.cancels.get(task_id)
    if kind == "cancel" and status == "completed" and answer == 409:
        v.explained["cancel answered 409: the task had finished first"] += 1
        return
    if kind == "cancel" and status == "completed" and answer == 202:
        # Asked while running, but the worker's outcome was written before it heard of it.
        v.explained["cancel answered 202 as the task completed"] += 1
        return
    v.problem(
        f"task {task_id} ({kind}) ended {status} ({error_type}), expected {expected}"
        + (f"; its cancel was last answered {answer}" if kind == "cancel" else "")
    )


def table(
    seed: int,
    duration: float,
    faults: list[Fault],
    injected: Counter[str],
    ledger: Ledger,
    v: Verdict,
) -> str:
    lines = [
        f"chaos run: seed {seed}, {duration:g} s, schedule {fingerprint(faults)} "
        f"({len(faults)} faults planned)",
        "",
        "| fault | injected |",
        "|---|---:|",
    ]
    lines += [f"| {kind} | {injected[kind]} |" for kind in sorted(injected)]
    lines += ["", "| task kind | completed | failed | cancelled |", "|---|---:|---:|---:|"]
    for kind in KIND_SPECS:
        counts = [v.outcomes[(kind, s)] for s in ("completed", "failed", "cancelled")]
        lines.append(f"| {kind} | " + " | ".join(str(c) for c in counts) + " |")
    lines += ["", "| enqueue path | tasks answered 201/200 |", "|---|---:|"]
    lines += [f"| {path} | {count} |" for path, count in sorted(ledger.paths.items())]
    lines += [
        "",
        f"client retries: {ledger.retries} (of which {ledger.uncertain} with the answer lost)",
        f"retried after: {dict(ledger.errors)}",
        "",
        "| explained | count |",
        "|---|---:|",
    ]
    lines += [f"| {what} | {count} |" for what, count in sorted(v.explained.items())]
    lines += ["", f"problems: {len(v.problems)}"] + [f"  {p}" for p in v.problems]
    return "\n".join(lines)
