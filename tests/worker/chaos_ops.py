"""The chaos run's operator: what a person running taskq does while the faults strike.

One thread, rounds drawn from the seed: pause a task type, submit tasks of it, resume it; submit
long tasks and cancel them in bulk (`POST /tasks/cancel`); submit tasks that fail, wait for them
to fail, retry them in bulk (`POST /tasks/retry`). A schedule fires every second from the start
until it is paused at the end. Each round keeps the moments the checker needs (chaos_check.py).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from tests.worker.chaos import SPECS, Api, Ledger

SCHEDULE = "chaos-tick"
CRON = "* * * * * *"  # every second (six fields: seconds first)
TICK_SECONDS = 1.0
ROUND_TASKS = (3, 8)
FAILED_WAIT = 20.0  # seconds a bulk-retry round waits for its tasks to fail before it retries


def instant(moment: float) -> str:
    """A wall-clock moment as the API's filters take it (RFC 3339, UTC)."""
    return datetime.fromtimestamp(moment, UTC).isoformat()


@dataclass
class PauseRound:
    """`ChaosPausable` was paused from `paused` (answered) to `resumed` (first sent): no attempt
    of it may start in between."""

    paused: float
    resumed: float
    ids: list[int]


@dataclass
class CancelRound:
    ids: list[int]
    sent: float
    answers: list[dict[str, int]]


@dataclass
class RetryRound:
    """Tasks that failed, retried in bulk at `retried` (answered), unless `skipped` says why not."""

    ids: list[int]
    retried: float | None
    skipped: str | None
    answers: list[dict[str, int]]


@dataclass
class ScheduleRun:
    first_tick: float
    pause_sent: float | None = None  # at the end of the run
    paused: float | None = None  # answered


@dataclass
class Operations:
    pauses: list[PauseRound] = field(default_factory=list)
    cancels: list[CancelRound] = field(default_factory=list)
    retries: list[RetryRound] = field(default_factory=list)
    schedule: ScheduleRun | None = None


class Operator:
    def __init__(self, api_url: str, database_url: str, seed: int, ledger: Ledger) -> None:
        self.database_url, self.ledger = database_url, ledger
        self.rng = random.Random(seed * 1000 + 999)
        self.stop = threading.Event()
        self.api = Api(api_url, ledger, self.stop)
        self.done = Operations()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._create_schedule()
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(180)
        run = self.done.schedule
        if run is not None:
            run.pause_sent = time.time()
            if self.api.call("PATCH", f"/schedules/{SCHEDULE}", json={"paused": True}):
                run.paused = time.time()
        self.api.close()

    def _run(self) -> None:
        # Every kind of round once per cycle, in an order drawn from the seed: even a short run
        # meets each of them.
        rounds = [self._pause, self._bulk_cancel, self._bulk_retry]
        while not self.stop.is_set():
            self.rng.shuffle(rounds)
            for round_ in rounds:
                if self.stop.wait(self.rng.uniform(0.5, 2.0)):
                    return
                round_()

    def _create_schedule(self) -> None:
        spec = SPECS["tick"]
        created = self.api.call(
            "POST",
            "/schedules",
            done=(201, 409),  # 409: an earlier try whose answer was lost created it
            json={
                "name": SCHEDULE,
                "cron": CRON,
                "task_type": spec.task_type,
                "input_data": spec.input_data,
                "catch_up": "once",
            },
        )
        if created is not None and created.status_code == 409:
            created = self.api.call("GET", f"/schedules/{SCHEDULE}")
        if created is not None:
            first = datetime.fromisoformat(created.json()["next_run_at"]).timestamp()
            self.done.schedule = ScheduleRun(first)

    def _pause(self) -> None:
        name = SPECS["paused"].task_type
        if not self.api.call("POST", f"/task-types/{name}/pause"):
            return
        paused = time.time()
        ids = self.api.submit("paused", path="batch", count=self.rng.randint(*ROUND_TASKS))
        self.stop.wait(self.rng.uniform(1.0, 3.0))
        resumed = time.time()
        self.api.call("POST", f"/task-types/{name}/resume")
        self.done.pauses.append(PauseRound(paused, resumed, ids))

    def _bulk_cancel(self) -> None:
        ids = self.api.submit("bulk_cancel", path="batch", count=self.rng.randint(*ROUND_TASKS))
        if not ids:
            return
        self.stop.wait(self.rng.uniform(0.3, 2.0))  # some are running by now, some pending
        sent = time.time()
        params = {"task_type": SPECS["bulk_cancel"].task_type, "created_before": instant(sent)}
        round_ = CancelRound(ids, sent, [])
        self.done.cancels.append(round_)
        answer = self.api.call("POST", "/tasks/cancel", params=params)
        if answer is not None:
            round_.answers.append(answer.json())

    def _bulk_retry(self) -> None:
        since = time.time()
        ids = self.api.submit("bulk_retry", path="batch", count=self.rng.randint(*ROUND_TASKS))
        if not ids:
            return
        round_ = RetryRound(ids, None, None, [])
        self.done.retries.append(round_)
        statuses = self._wait_failed(ids)
        if statuses:
            round_.skipped = f"not all failed within {FAILED_WAIT:g} s: {statuses}"
            return
        params = {
            "task_type": SPECS["bulk_retry"].task_type,
            "status": "failed",
            "created_after": instant(since),
        }
        answer = self.api.call("POST", "/tasks/retry", params=params)
        if answer is not None:
            round_.retried = time.time()
            round_.answers.append(answer.json())

    def _wait_failed(self, ids: list[int]) -> dict[str, int]:
        """Wait until every one of `ids` has failed; {} then, else their statuses."""
        deadline = time.monotonic() + FAILED_WAIT
        statuses: dict[str, int] = {"unknown": len(ids)}
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                    rows = conn.execute(
                        "SELECT status, count(*) FROM tasks WHERE id = ANY(%s) GROUP BY status",
                        (ids,),
                    ).fetchall()
                statuses = dict(rows)
                if statuses == {"failed": len(ids)}:
                    return {}
            except psycopg.OperationalError:
                pass  # the database is down for now: ask again
            time.sleep(0.3)
        return statuses
