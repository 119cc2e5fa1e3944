"""The chaos run's checker: reads back every task, attempt, run and schedule tick (the deleted
ones too: the run's database copies every deleted row, see test_chaos.py) and holds them to the
promise; then prints the summary table.

A fault may excuse an outcome only where it struck: a failure is explained by an injected event
that can cause that error, on the worker that ran the attempt (or on every worker, for a server
outage), while the attempt ran; a run without its attempt record only by a PostgreSQL crash at
that run's start. Each excuse is listed, task by task.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import Servers
from tests.worker.chaos import RETENTION, SPECS, Event, Fault, Ledger, fingerprint
from tests.worker.chaos_ops import SCHEDULE, TICK_SECONDS, Operations

FINAL = ("completed", "failed", "cancelled")
SLACK = 0.5  # seconds around an event: one clock (one host), but signals and sockets take time
# A schedule tick fires within the scheduler's poll (0.5 s) and a statement; one due this close
# to the schedule's pause may be dropped by it ("ticks while paused are dropped").
LATE_TICK = 1.5
RETENTION_GRACE = 10.0  # seconds past its retention a finished task may live (sweeps, faults)
# The API deletes a row it inserted when the push of its id then fails (and answers 503); the
# push gives up within its 5 s socket timeout.
TAKEN_BACK_WITHIN = 15.0
MAX_LINES = 60  # excuses and events listed; the rest counted
PER_INVARIANT = 15  # cases listed per broken invariant
INVARIANTS = {  # the short names problems are filed under, and what each holds
    "rows": "every 201 has its row, and rows without one are at most the answers lost",
    "unfinished": "nothing is left pending or running",
    "history": "attempts match the history: each ended once, one after the other",
    "outcome": "each task ends as its kind asks, or as a fault that struck its attempt explains",
    "unrecorded run": "every run has its attempt record, unless a PostgreSQL crash took its claim",
    "pause": "no attempt of a paused task type starts",
    "schedule": "one task per schedule tick: none early, none missed, none after the pause",
    "retention": "retention deletes the finished tasks past their retention, and only those",
    "deleted": "the only other rows deleted are the API's own, unanswered, whose push failed",
    "operator": "every operation was exercised",
    "client": "every client request got its answer",
    "workers": "no worker exited by itself",
}
# Which injected events can end an attempt with which error, and whether they strike one worker
# (the one whose process they hit) or all of them.
CAUSES: dict[str, tuple[str, ...]] = {
    # the lease lapsed: the worker died, stopped, was cut off, or could not reach PostgreSQL
    "LeaseExpiredError": ("kill_worker", "pause_worker", "cut_network", "crash_postgres"),
    # the task's own Redis call (chaos_tasks.py) met Redis down or unreachable
    "ConnectionError": ("restart_redis", "cut_network"),
    "TimeoutError": ("restart_redis", "cut_network"),
    "BusyLoadingError": ("restart_redis",),
    "RunnerCrashedError": ("kill_runner",),
}


def _seconds(moment: datetime | str | None) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.timestamp()


@dataclass(frozen=True)
class Task:
    id: int
    task_type: str
    status: str
    attempts: int
    error_type: str | None
    created: float
    finished: float | None
    deleted: float | None  # when retention (or anything) deleted it


@dataclass(frozen=True)
class Attempt:
    task_id: int
    attempt: int
    outcome: str
    worker_id: str | None
    started: float | None
    finished: float
    error_type: str | None

    @property
    def pid(self) -> int | None:
        """The worker's process id (worker ids are host:pid:random)."""
        return int(self.worker_id.split(":")[-2]) if self.worker_id else None


@dataclass(frozen=True)
class Run:
    """One execution as the task itself wrote it (chaos_tasks.py)."""

    task_id: int
    attempt: int
    worker_id: str
    start: float
    end: float | None  # None: its process was killed mid-run


@dataclass
class Evidence:
    tasks: dict[int, Task]
    history: dict[int, list[Attempt]]
    ticks: dict[float, int]  # tick_at -> task id
    now: float  # the database's clock when read


# ---- reading ----------------------------------------------------------------------------------

# The live rows and the copies of deleted ones, in one shape.
_TASKS = """
    SELECT id, task_type, status, attempts, error->>'type', created_at, finished_at, NULL
    FROM tasks
    UNION ALL
    SELECT id, task_type, status, attempts, error->>'type', created_at, finished_at, deleted_at
    FROM chaos_deleted_tasks
"""
_ATTEMPTS = """
    SELECT id, task_id, attempt, outcome, worker_id, started_at, finished_at, error->>'type'
    FROM task_attempts
    UNION ALL
    SELECT id, task_id, attempt, outcome, worker_id, started_at, finished_at, error->>'type'
    FROM chaos_deleted_attempts
    ORDER BY 1
"""
_TICKS = """
    SELECT tick_at, task_id FROM schedule_ticks WHERE schedule = %(name)s
    UNION ALL
    SELECT tick_at, task_id FROM chaos_deleted_ticks WHERE schedule = %(name)s
"""


def read(servers: Servers) -> Evidence:
    tasks: dict[int, Task] = {}
    for task_id, task_type, status, attempts, error, created, finished, deleted in servers.sql(
        _TASKS
    ):
        task = Task(
            task_id,
            task_type,
            status,
            attempts,
            error,
            _seconds(created) or 0.0,
            _seconds(finished),
            _seconds(deleted),
        )
        assert task.id not in tasks, f"task {task.id} both live and deleted"
        tasks[task.id] = task
    history: dict[int, list[Attempt]] = {}
    for row in servers.sql(_ATTEMPTS):
        attempt = Attempt(
            row[1], row[2], row[3], row[4], _seconds(row[5]), _seconds(row[6]) or 0.0, row[7]
        )
        history.setdefault(attempt.task_id, []).append(attempt)
    ticks: dict[float, int] = {}
    for tick_at, task_id in servers.sql(_TICKS, {"name": SCHEDULE}):
        moment = _seconds(tick_at)
        assert moment is not None
        assert moment not in ticks, f"tick {tick_at} twice"
        ticks[moment] = task_id
    now = _seconds(servers.sql("SELECT now()")[0][0]) or 0.0
    return Evidence(tasks, history, ticks, now)


def read_runs(path: Path) -> list[Run]:
    """Every execution the tasks wrote, a start line and (unless killed) an end line each."""
    if not path.exists():
        return []
    starts: dict[str, dict[str, Any]] = {}
    ends: dict[str, float] = {}
    for line in path.read_text().splitlines():
        note = json.loads(line)
        if "start" in note:
            starts[note["run"]] = note
        else:
            ends[note["run"]] = note["end"]
    return [
        Run(n["task"], n["attempt"], n["worker"], n["start"], ends.get(run))
        for run, n in starts.items()
    ]


# ---- the verdict ------------------------------------------------------------------------------


@dataclass
class Verdict:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (which invariant, the case)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, how it ended)
    explained: Counter[str] = field(default_factory=Counter)  # what a fault explains, by kind
    excuses: list[str] = field(default_factory=list)  # each explained case, task by task
    operations: dict[str, Any] = field(default_factory=dict)  # what the operator's rounds did

    def problem(self, invariant: str, text: str) -> None:
        assert invariant in INVARIANTS, invariant
        self.problems.append((invariant, text))

    def excuse(self, category: str, text: str) -> None:
        self.explained[category] += 1
        self.excuses.append(text)


class Checker:
    """What the run left, held to every invariant; `check` returns the verdict."""

    def __init__(
        self,
        evidence: Evidence,
        runs: list[Run],
        ledger: Ledger,
        operations: Operations,
        events: list[Event],
        duration: float,
    ) -> None:
        self.e, self.runs, self.ledger, self.ops = evidence, runs, ledger, operations
        self.events, self.duration = events, duration
        self.v = Verdict()
        self.tick_tasks = set(evidence.ticks.values())
        self.taken_back = self._taken_back()
        for task_id in self.taken_back:
            del evidence.tasks[task_id]
        self.retried_at = {i: r.retried for r in operations.retries for i in r.ids}
        self.retry_skipped = {i for r in operations.retries if r.skipped for i in r.ids}

    def at(self, moment: float | None) -> str:
        return "?" if moment is None else self.ledger.at(moment)

    def _taken_back(self) -> set[int]:
        """Rows the API deleted again because the push of their id failed (it answered 503,
        nothing was written): pending, never answered 201, never run, deleted within seconds.
        Any other row deleted while not finished is a problem."""
        found = set()
        for task in self.e.tasks.values():
            if task.deleted is None or task.status in FINAL:
                continue
            label = f"task {task.id} ({self.kind_of(task.id)}, {task.task_type})"
            age = task.deleted - task.created
            if task.id in self.ledger.kinds:
                why = "though it was answered 201"
            elif self.e.history.get(task.id):
                why = f"after {len(self.e.history[task.id])} attempt(s)"
            elif task.status != "pending" or age > TAKEN_BACK_WITHIN:
                why = f"{age:.1f} s after it was created"
            else:
                found.add(task.id)
                continue
            self.v.problem(
                "deleted",
                f"{label} was deleted at {self.at(task.deleted)} while {task.status}, {why}",
            )
        return found

    def check(self) -> Verdict:
        self._rows()
        for task in self.e.tasks.values():
            self._task(task)
        self._runs()
        self._pauses()
        self._schedule()
        self._retention()
        self._operations()
        for failure in self.ledger.failures:
            self.v.problem("client", f"a client could not do its part: {failure}")
        return self.v

    # ---- every task ----------------------------------------------------------------------------

    def _rows(self) -> None:
        """Every 201 has its row (live or deleted by retention); rows no 201 accounts for are
        schedule ticks or twins of a submission whose answer was lost (the client retried
        without a key), never more of those than such submissions."""
        for task_id, kind in self.ledger.kinds.items():
            if task_id not in self.e.tasks:
                self.v.problem("rows", f"task {task_id} ({kind}) was answered 201 but has no row")
        twins = set(self.e.tasks) - set(self.ledger.kinds) - self.tick_tasks
        if len(twins) > self.ledger.uncertain:
            self.v.problem(
                "rows",
                f"{len(twins)} rows without a 201 ({sorted(twins)[:20]}...), "
                f"only {self.ledger.uncertain} submissions whose answer was lost",
            )
        self.v.explained["twin of a submission whose answer was lost"] = len(twins)

    def kind_of(self, task_id: int) -> str | None:
        if task_id in self.tick_tasks:
            return "tick"
        return self.ledger.kinds.get(task_id)

    def _task(self, task: Task) -> None:
        records = self.e.history.get(task.id, [])
        if task.status not in FINAL and task.deleted is not None:
            return  # reported as deleted (_taken_back)
        if task.status not in FINAL:
            self.v.problem(
                "unfinished", f"task {task.id} ({self.kind_of(task.id)}) is still {task.status}"
            )
            return
        counted = sorted(r.attempt for r in records if r.outcome != "handed_back")
        if counted != list(range(1, task.attempts + 1)):
            self.v.problem(
                "history",
                f"task {task.id}: attempts {task.attempts}, but its history is "
                f"{[(r.attempt, r.outcome, r.worker_id) for r in records]}",
            )
        finals = [r for r in records if r.outcome in FINAL]
        # A bulk retry starts a finished task of its type again (twins of a round's tasks
        # too): its history then has a final record per time it finished (the order of the
        # attempts is checked below).
        if len(finals) > 1 and task.task_type != SPECS["bulk_retry"].task_type:
            self.v.problem(
                "history",
                f"task {task.id} ({self.kind_of(task.id)}): {len(finals)} final attempt records "
                f"{[(r.attempt, r.outcome, r.worker_id) for r in finals]}, and no bulk retry",
            )
        for before, after in itertools.pairwise(records):
            started, ended = after.started, before.finished
            if started is not None and started < ended:
                if before.outcome == "lost":
                    self.v.explained["ran beside an attempt whose lease expired"] += 1
                else:
                    self.v.problem(
                        "history",
                        f"task {task.id}: attempt {after.attempt} started at {self.at(started)}"
                        f", before attempt {before.attempt} ended at {self.at(ended)}",
                    )
        kind = self.kind_of(task.id)
        if kind is not None:
            self._outcome(task, kind, records)

    def _outcome(self, task: Task, kind: str, records: list[Attempt]) -> None:
        spec = SPECS[kind]
        status, error = spec.status, spec.error
        if task.id in self.retry_skipped:  # its bulk retry never came: it stays failed
            status, error = "failed", "ValueError"
        self.v.outcomes[(kind, task.status)] += 1
        if task.status == status and (status != "failed" or task.error_type == error):
            return
        label = f"task {task.id} ({kind}, {task.task_type})"
        expected = f"expected {status}" + (f" with {error}" if status == "failed" else "")
        answer = self.ledger.cancels.get(task.id)
        # 409: it had finished first; 202: asked while running, but the worker's outcome was
        # written before it heard of it; 404: finished, then deleted by retention.
        if (
            kind == "cancel"
            and task.status == "completed"
            and (answer in (202, 409) or (answer == 404 and task.deleted is not None))
        ):
            self.v.explained[f"cancel answered {answer} as the task completed"] += 1
            return
        retried = self.retried_at.get(task.id)
        if (
            kind == "bulk_retry"
            and task.status == "failed"
            and task.deleted is not None
            and (retried is None or task.deleted < retried)
        ):
            self.v.excuse(
                "bulk retry came after retention deleted the failed task",
                f"{label}: deleted at {self.at(task.deleted)}, failed, before its bulk retry",
            )
            return
        last = records[-1] if records else None
        if task.status == "failed" and last is not None:
            event = self.cause(task.error_type, last)
            if event is not None:
                self.v.excuse(
                    f"{kind} failed by {event.kind} ({task.error_type})",
                    f"{label} failed with {task.error_type} on attempt {last.attempt} "
                    f"({self._span(last)} on worker {last.pid}): event #{event.number} "
                    f"{event.kind} at {self.at(event.start)}-{self.at(event.end)}"
                    + (f" ({event.detail})" if event.detail else ""),
                )
                return
        what = f"ended {task.status}" + (f" with {task.error_type}" if task.error_type else "")
        if last is not None:
            what += f", last attempt {last.attempt} {last.outcome} ({self._span(last)}"
            what += f" on worker {last.worker_id})"
        why = ""
        if task.status == "failed" and task.error_type in CAUSES:
            why = (
                f"; no injected {' / '.join(CAUSES[task.error_type])} struck that worker "
                "while that attempt ran"
            )
        elif task.status == "failed":
            why = f"; no injected fault causes {task.error_type}"
        if kind == "cancel":
            why += f"; its cancel was last answered {answer}"
        self.v.problem("outcome", f"{label}: {expected}, {what}{why}")

    def _span(self, attempt: Attempt) -> str:
        return f"{self.at(attempt.started)}-{self.at(attempt.finished)}"

    def cause(self, error_type: str | None, attempt: Attempt) -> Event | None:
        """The injected event that can have ended `attempt` with `error_type`: one of the kinds
        that cause that error, striking the attempt's worker, while the attempt ran."""
        kinds = CAUSES.get(error_type or "", ())
        start = attempt.started if attempt.started is not None else attempt.finished
        for event in self.events:
            if event.kind not in kinds:
                continue
            if event.pids is not None and attempt.pid not in event.pids:
                continue
            if event.start <= attempt.finished + SLACK and event.end >= start - SLACK:
                return event
        return None

    # ---- runs and their records ---------------------------------------------------------------

    def _runs(self) -> None:
        """Every run a task saw has its attempt record, (task, attempt) by (task, attempt): a
        claim is durable before its task starts, so no crash can take a run's record away."""
        records = Counter(
            (r.task_id, r.attempt) for attempts in self.e.history.values() for r in attempts
        )
        by_key: dict[tuple[int, int], list[Run]] = {}
        for run in self.runs:
            by_key.setdefault((run.task_id, run.attempt), []).append(run)
        for (task_id, attempt), runs in sorted(by_key.items()):
            if task_id not in self.e.tasks:
                self.v.problem(
                    "unrecorded run", f"task {task_id} ran (attempt {attempt}) but has no row"
                )
                continue
            unrecorded = len(runs) - records[(task_id, attempt)]
            if unrecorded <= 0:
                continue
            label = f"task {task_id} ({self.kind_of(task_id)}) attempt {attempt}"
            where = ", ".join(
                f"{self.at(run.start)} on worker {run.worker_id}"
                for run in sorted(runs, key=lambda r: r.start)
            )
            self.v.problem(
                "unrecorded run",
                f"{label}: {len(runs)} runs ({where}) but {records[(task_id, attempt)]} "
                "attempt record(s)",
            )

    # ---- the operator's actions ---------------------------------------------------------------

    def _pauses(self) -> None:
        """No attempt of the paused type starts between its pause and its resume."""
        paused_type = SPECS["paused"].task_type
        for n, round_ in enumerate(self.ops.pauses, 1):
            for task in self.e.tasks.values():
                if task.task_type != paused_type:
                    continue
                for r in self.e.history.get(task.id, []):
                    if r.started is not None and round_.paused <= r.started <= round_.resumed:
                        self.v.problem(
                            "pause",
                            f"task {task.id} ({paused_type}): attempt {r.attempt} started at "
                            f"{self.at(r.started)} on worker {r.worker_id}, while its type "
                            f"was paused ({self.at(round_.paused)}-{self.at(round_.resumed)}, "
                            f"pause round {n})",
                        )

    def _schedule(self) -> None:
        """One task per tick, none early, none after the pause, and every tick fired that was
        due long enough before the pause (or before a PostgreSQL outage that lasted into it)."""
        run = self.ops.schedule
        if run is None:
            self.v.problem("schedule", "the schedule was never created")
            return
        if run.pause_sent is None or run.paused is None:
            self.v.problem(
                "schedule", "the schedule was not paused at the end (see the client failures)"
            )
            return
        ticks = self.e.ticks
        tick_type = SPECS["tick"].task_type
        for task in self.e.tasks.values():
            if task.task_type == tick_type and task.id not in self.tick_tasks:
                self.v.problem(
                    "schedule", f"task {task.id} ({tick_type}) belongs to no schedule tick"
                )
        if len(self.tick_tasks) != len(ticks):
            self.v.problem("schedule", f"{len(ticks)} ticks share {len(self.tick_tasks)} tasks")
        missing, late = [], 0
        t = run.first_tick
        while t <= run.paused + SLACK:
            task_id = ticks.get(t)
            if task_id is not None:
                task = self.e.tasks.get(task_id)
                if task is None:
                    self.v.problem("schedule", f"tick at {self.at(t)}: task {task_id} has no row")
                elif task.created < t - SLACK:
                    self.v.problem(
                        "schedule",
                        f"tick at {self.at(t)}: task {task_id} created early, "
                        f"at {self.at(task.created)}",
                    )
            elif self._due_by(t) + LATE_TICK < run.pause_sent:
                missing.append(self.at(t))
            else:
                late += 1  # due too close to the pause: it may have been dropped
            t += TICK_SECONDS
        expected = round((run.pause_sent - run.first_tick) / TICK_SECONDS)
        for tick in ticks:
            if tick > run.paused + SLACK:
                self.v.problem("schedule", f"tick at {self.at(tick)} fired after the pause")
            elif (tick - run.first_tick) % TICK_SECONDS or tick < run.first_tick:
                self.v.problem("schedule", f"tick at {self.at(tick)} is not one of the cron's")
        if missing:
            self.v.problem(
                "schedule", f"schedule ticks never fired (no outage explains them): {missing}"
            )
        self.v.operations["schedule ticks (fired; due before the pause; missed)"] = (
            f"{len(ticks)}; {expected}; {len(missing)} (and {late} due too close to the pause "
            "to be missed)"
        )

    def _due_by(self, tick: float) -> float:
        """When the tick could fire at the latest: its time, or the end of a PostgreSQL outage
        it fell into (no worker can fire it meanwhile)."""
        due = tick
        for event in sorted(self.events, key=lambda e: e.start):
            if event.kind == "crash_postgres" and event.start - SLACK <= due <= event.end + SLACK:
                due = event.end
        return due

    def _retention(self) -> None:
        """Retention deletes only finished tasks older than their status's limit, and does
        delete them."""
        purged: Counter[str] = Counter()
        for task in self.e.tasks.values():
            limit = RETENTION.get(task.status)
            if task.deleted is not None:
                if limit is None or task.finished is None:
                    continue  # not retention's doing: see _taken_back
                purged[task.status] += 1
                if task.finished > task.deleted - limit:
                    self.v.problem(
                        "retention",
                        f"task {task.id} ({task.status}) was deleted at {self.at(task.deleted)}"
                        f", {task.deleted - task.finished:.2f} s after it finished: its "
                        f"retention is {limit:g} s",
                    )
            elif (
                limit is not None
                and task.finished is not None
                and task.finished < self.e.now - limit - RETENTION_GRACE
            ):
                self.v.problem(
                    "retention",
                    f"task {task.id} ({task.status}) finished at {self.at(task.finished)} "
                    f"and is still kept, {self.e.now - task.finished:.1f} s later: its "
                    f"retention is {limit:g} s",
                )
        if self.duration >= 30 and not purged["completed"]:
            self.v.problem("retention", "retention deleted no completed task in the whole run")
        self.v.operations["deleted by retention"] = dict(purged)
        self.v.operations["rows the API took back (its push failed, it answered 503)"] = len(
            self.taken_back
        )

    def _operations(self) -> None:
        ops = self.ops
        self.v.operations["pause rounds (tasks submitted while paused)"] = (
            f"{len(ops.pauses)} ({sum(len(r.ids) for r in ops.pauses)})"
        )
        answers = [a for r in ops.cancels for a in r.answers]
        self.v.operations["bulk cancel rounds (tasks; answered cancelled + stopping)"] = (
            f"{len(ops.cancels)} ({sum(len(r.ids) for r in ops.cancels)}; "
            f"{sum(a['cancelled'] for a in answers)} + {sum(a['stopping'] for a in answers)})"
        )
        skipped = [r for r in ops.retries if r.skipped]
        self.v.operations["bulk retry rounds (tasks; answered retried; skipped)"] = (
            f"{len(ops.retries)} ({sum(len(r.ids) for r in ops.retries)}; "
            f"{sum(a['retried'] for r in ops.retries for a in r.answers)}; {len(skipped)})"
        )
        if self.duration >= 30:
            for name, done in (
                ("paused a task type", ops.pauses),
                ("cancelled in bulk", ops.cancels),
                ("retried in bulk", [r for r in ops.retries if not r.skipped]),
            ):
                if not done:
                    self.v.problem(
                        "operator", f"the operator never {name}: that invariant went unchecked"
                    )


def check(
    servers: Servers,
    runs_file: Path,
    ledger: Ledger,
    operations: Operations,
    events: list[Event],
    duration: float,
) -> Verdict:
    evidence = read(servers)
    return Checker(evidence, read_runs(runs_file), ledger, operations, events, duration).check()


def _capped(lines: Iterable[str], most: int = MAX_LINES) -> list[str]:
    lines = list(lines)
    shown = [f"  {line}" for line in lines[:most]]
    if len(lines) > most:
        shown.append(f"  ... and {len(lines) - most} more")
    return shown


def table(
    seed: int,
    duration: float,
    faults: list[Fault],
    events: list[Event],
    ledger: Ledger,
    v: Verdict,
) -> str:
    injected = Counter(e.kind for e in events)
    lines = [
        f"chaos run: seed {seed}, {duration:g} s, schedule {fingerprint(faults)} "
        f"({len(faults)} faults planned); replay: make chaos SEED={seed} DURATION={duration:g}",
        "; ".join(ledger.notes),
        "",
        "| fault | injected |",
        "|---|---:|",
    ]
    lines += [f"| {kind} | {injected[kind]} |" for kind in sorted(injected)]
    lines += ["", "| task kind | completed | failed | cancelled |", "|---|---:|---:|---:|"]
    for kind in SPECS:
        counts = [v.outcomes[(kind, s)] for s in FINAL]
        lines.append(f"| {kind} | " + " | ".join(str(c) for c in counts) + " |")
    lines += ["", "| enqueue path | tasks answered 201/200 |", "|---|---:|"]
    lines += [f"| {path} | {count} |" for path, count in sorted(ledger.paths.items())]
    lines += ["", "| operation | result |", "|---|---|"]
    lines += [f"| {what} | {result} |" for what, result in v.operations.items()]
    lines += [
        "",
        f"client retries: {ledger.retries} (of which {ledger.uncertain} with the answer lost)",
        f"retried after: {dict(ledger.errors)}",
        "",
        "| explained | count |",
        "|---|---:|",
    ]
    lines += [f"| {what} | {count} |" for what, count in sorted(v.explained.items())]
    if v.excuses:
        lines += ["", "excused, each matched to the injected event that explains it:"]
        lines += _capped(v.excuses)
    lines += ["", f"problems: {len(v.problems)}"]
    # By invariant, each with its first cases: one broken invariant's many cases (tasks left
    # pending, say) must not hide another's.
    broken = Counter(invariant for invariant, _ in v.problems)
    for invariant, count in broken.items():
        cases = [text for kind, text in v.problems if kind == invariant]
        lines += [f"- {INVARIANTS[invariant]} ({count}):", *_capped(cases, PER_INVARIANT)]
    if v.problems:
        lines += ["", "injected events (seconds into the run; worker pids struck):"]
        lines += _capped(
            f"#{e.number} {e.kind} {ledger.at(e.start)}-{ledger.at(e.end)} "
            f"{sorted(e.pids) if e.pids is not None else 'all'} {e.detail}".rstrip()
            for e in events
        )
    return "\n".join(lines)
