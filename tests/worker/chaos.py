"""The randomized chaos run: traffic through every enqueue path while faults strike at random
moments, then a check of everything the servers hold (see docs/reliability.md).

The seed decides the fault schedule (kinds, moments, lengths, targets): the same seed replays the
same schedule. Traffic runs in threads alongside, its mix drawn from the seed too, its timing left
to the machine. The operators' actions (pausing a type, bulk cancel and retry, a schedule) are in
chaos_ops.py; the task types in chaos_tasks.py; the checker in chaos_check.py.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from taskq_core.client import Client
from taskq_core.db import engines

KINDS = (
    "kill_worker",
    "kill_runner",
    "pause_worker",
    "kill_api",
    "crash_postgres",
    "flush_redis",
    "restart_redis",
    "cut_network",
)
PATHS = ("single", "idempotent", "batch", "client", "enqueue_in")
LEASE = 2.0  # seconds: the workers' lease; pauses and cuts last longer than this
# Seconds finished tasks are kept, by status: short, so the run purges while tasks flow.
RETENTION = {"completed": 6.0, "cancelled": 10.0, "failed": 30.0}


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start
    kind: str
    length: float  # seconds the fault lasts (a pause, a cut, a server down)
    target: int  # which worker, for worker faults (modulo the number of workers)


@dataclass(frozen=True)
class Event:
    """A fault as it was injected: wall-clock times (time.time(), the servers' clock too) and
    the worker processes it struck (None: all of them, e.g. a database crash)."""

    number: int  # its place in the schedule, from 1
    kind: str
    start: float
    end: float
    pids: frozenset[int] | None
    detail: str = ""


def schedule(seed: int, duration: float) -> list[Fault]:
    """The fault schedule of a run: one after another, a few seconds of calm between."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = rng.uniform(2.0, 4.0)
    while t < duration - 4.0:
        kind = rng.choice(KINDS)
        length = {
            "pause_worker": rng.uniform(LEASE + 1, LEASE + 4),
            "cut_network": rng.uniform(LEASE + 2, LEASE + 5),
            "crash_postgres": rng.uniform(0.5, 3.0),
            "restart_redis": rng.uniform(0.5, 3.0),
        }.get(kind, 0.0)
        faults.append(Fault(round(t, 2), kind, round(length, 2), rng.randrange(1000)))
        t += length + rng.uniform(2.0, 6.0)
    return faults


def fingerprint(faults: list[Fault]) -> str:
    return hashlib.sha256(repr(faults).encode()).hexdigest()[:12]


def chaos_site(folder: Path) -> Path:
    """A folder that, on PYTHONPATH, makes chaos_tasks.py look pip-installed (`taskq-chaos`)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("chaos_tasks.py"), folder / "taskq_chaos.py")
    info = folder / "taskq_chaos-0.1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: taskq-chaos\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[taskq.tasks]\nchaos = taskq_chaos\n")
    return folder


# ---- what is submitted, and how it must end -------------------------------------------------


@dataclass(frozen=True)
class Spec:
    task_type: str
    input_data: dict[str, Any]
    options: dict[str, Any]
    status: str  # how it ends when no fault intervenes
    error: str | None = None  # and with which error, when it fails


SPECS: dict[str, Spec] = {
    "ok": Spec("ChaosSleep", {"seconds": 0.2}, {"max_attempts": 5}, "completed"),
    "sync_ok": Spec("ChaosBlock", {"seconds": 0.1}, {"max_attempts": 5}, "completed"),
    "fail": Spec("ChaosFail", {}, {"max_attempts": 2}, "failed", "ValueError"),
    "retry": Spec(
        "ChaosRetry", {"after": 0.3, "succeed_on_attempt": 2}, {"max_attempts": 5}, "completed"
    ),
    "timeout": Spec(
        "ChaosSleep",
        {"seconds": 30},
        {"max_attempts": 2, "timeout_seconds": 0.5},
        "failed",
        "TaskTimeoutError",
    ),
    "cancel": Spec("ChaosSleep", {"seconds": 6}, {"max_attempts": 5}, "cancelled"),
    # The operators' (chaos_ops.py): submitted while their type is paused, cancelled in bulk,
    # failed then retried in bulk (max_attempts 1: the first attempt fails, the retry's
    # succeeds), fired by the schedule.
    "paused": Spec("ChaosPausable", {"seconds": 0.05}, {"max_attempts": 5}, "completed"),
    "bulk_cancel": Spec("ChaosLong", {"seconds": 30}, {"max_attempts": 5}, "cancelled"),
    "bulk_retry": Spec("ChaosFlaky", {"succeed_on_attempt": 2}, {"max_attempts": 1}, "completed"),
    "tick": Spec("ChaosTick", {"seconds": 0.05}, {}, "completed"),
}
TRAFFIC_KINDS = ("ok", "sync_ok", "fail", "retry", "timeout", "cancel")


def body(kind: str) -> dict[str, Any]:
    spec = SPECS[kind]
    return {"task_type": spec.task_type, "input_data": spec.input_data, **spec.options}


@dataclass
class Ledger:
    """What the clients did: ids answered 201 (with their kind), attempts of unknown result."""

    started: float = field(default_factory=time.time)  # wall clock: the run's time zero
    kinds: dict[int, str] = field(default_factory=dict)
    paths: Counter[str] = field(default_factory=Counter)
    uncertain: int = 0  # submissions whose result never came back (they may have committed)
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # what the client retried after
    cancels: dict[int, int] = field(default_factory=dict)  # id: status of the cancel request
    failures: list[str] = field(default_factory=list)  # a client that could not do its part
    notes: list[str] = field(default_factory=list)  # how the run went, for the report
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, ids: list[int], kind: str, path: str) -> None:
        with self.lock:
            for i in ids:
                assert i not in self.kinds, f"id {i} handed out twice"
                self.kinds[i] = kind
            self.paths[path] += len(ids)

    def error(self, what: str, *, uncertain: bool) -> None:
        with self.lock:
            self.errors[what] += 1
            self.retries += 1
            self.uncertain += int(uncertain)

    def at(self, moment: float) -> str:
        """`moment` (wall clock) as seconds into the run, as the report shows times."""
        return f"{moment - self.started:.2f}s"


class Api:
    """One thread's client of the API, retrying as a real client does (after a 503, after the
    connection broke)."""

    def __init__(self, url: str, ledger: Ledger, stop: threading.Event) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.ledger, self.stop = ledger, stop

    def close(self) -> None:
        self.http.close()

    def submit(self, kind: str, *, path: str, count: int = 1) -> list[int]:
        """Submit `count` tasks of `kind` by `path` (single, idempotent or batch); their ids,
        recorded in the ledger; [] if the run stopped first."""
        task = body(kind)
        if path == "single":
            # No key: a lost answer may hide a commit, so a retry may make a twin (counted).
            ids = self._post(lambda: self.http.post("/tasks/", json=task), single=True)
        elif path == "idempotent":
            key = {"Idempotency-Key": uuid.uuid4().hex}
            ids = self._post(lambda: self.http.post("/tasks/", json=task, headers=key), single=True)
        else:
            batch = {"tasks": [task] * count}
            ids = self._post(lambda: self.http.post("/tasks/batch", json=batch), single=False)
        self.ledger.accept(ids, kind, path)
        return ids

    def _post(self, send: Callable[[], httpx.Response], *, single: bool) -> list[int]:
        for _ in range(100):
            if self.stop.is_set():
                return []
            try:
                response = send()
            except httpx.HTTPError as exc:  # the API died mid-request: it may have committed
                self.ledger.error(f"http: {type(exc).__name__}", uncertain=True)
                self.stop.wait(0.5)
                continue
            if response.status_code in (200, 201):
                data = response.json()
                return [data["id"]] if single else [t["id"] for t in data["tasks"]]
            assert response.status_code == 503, f"{response.status_code} {response.text}"
            with self.ledger.lock:  # nothing was written: a plain retry
                self.ledger.retries += 1
            self.stop.wait(float(response.headers.get("retry-after", "1")))
        return []

    def call(
        self, method: str, url: str, *, done: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response | None:
        """Send until answered with a status in `done` (whatever `stop` says: an operator
        finishes what it started); None, noted in the ledger, if that takes two minutes."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                self.ledger.error(f"http: {type(exc).__name__}", uncertain=False)
                time.sleep(0.5)
                continue
            if response.status_code in done:
                return response
            if response.status_code != 503:
                with self.ledger.lock:
                    self.ledger.failures.append(
                        f"{method} {url} {kwargs.get('params') or ''} answered "
                        f"{response.status_code}: {response.text[:300]}"
                    )
                return None
            with self.ledger.lock:
                self.ledger.retries += 1
            time.sleep(float(response.headers.get("retry-after", "1")))
        with self.ledger.lock:
            self.ledger.failures.append(f"{method} {url} was not answered {done} within 120 s")
        return None


class Traffic:
    """Threads submitting tasks by every path, retrying as a real client would."""

    def __init__(
        self, api_url: str, database_url: str, redis_url: str, seed: int, ledger: Ledger
    ) -> None:
        self.api_url, self.database_url, self.redis_url = api_url, database_url, redis_url
        self.seed, self.ledger = seed, ledger
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.timers: list[threading.Timer] = []

    def start(self, threads: int = 3) -> None:
        for n in range(threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        for timer in list(self.timers):  # every cancel asked for is sent
            timer.join(120)

    def _run(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        api = Api(self.api_url, self.ledger, self.stop)
        client = Client(redis_url=self.redis_url, database_url=self.database_url)
        engine = engines.sync_engine(self.database_url)
        try:
            while not self.stop.is_set():
                kind = rng.choice(TRAFFIC_KINDS)
                path = rng.choice(PATHS)
                if path in ("client", "enqueue_in"):
                    ids = self._enqueue(client, engine, kind, path)
                else:
                    ids = api.submit(kind, path=path, count=rng.randint(2, 6))
                if kind == "cancel":
                    for task_id in ids:
                        self._cancel_later(rng, task_id)
                self.stop.wait(rng.uniform(0.02, 0.15))
        finally:
            api.close()
            client.close()
            engine.dispose()

    def _enqueue(self, client: Client, engine: Any, kind: str, path: str) -> list[int]:
        """Submit one task from Python: Client.enqueue, or enqueue_in in our own transaction."""
        spec = SPECS[kind]
        for _ in range(100):
            if self.stop.is_set():
                return []
            try:
                if path == "client":
                    ids = [client.enqueue(spec.task_type, spec.input_data, **spec.options)]
                else:
                    with Session(engine) as session:
                        task_id = client.enqueue_in(
                            session, spec.task_type, spec.input_data, **spec.options
                        )
                        session.commit()
                        ids = [task_id]
                self.ledger.accept(ids, kind, path)
                return ids
            except (DBAPIError, RedisError, OSError) as exc:  # it may or may not have committed
                self.ledger.error(f"{path}: {type(exc).__name__}", uncertain=True)
                self.stop.wait(0.5)
        return []

    def _cancel_later(self, rng: random.Random, task_id: int) -> None:
        def cancel() -> None:
            with httpx.Client(base_url=self.api_url, timeout=10) as own:
                for _ in range(100):
                    try:
                        response = own.post(f"/tasks/{task_id}/cancel")
                    except httpx.HTTPError:
                        time.sleep(0.5)
                        continue
                    with self.ledger.lock:
                        self.ledger.cancels[task_id] = response.status_code
                    # 404: retention deleted it, finished, before the cancel got through.
                    if response.status_code in (200, 202, 404, 409):
                        return
                    time.sleep(0.5)

        timer = threading.Timer(rng.uniform(0.3, 2.0), cancel)
        timer.daemon = True
        timer.start()
        self.timers.append(timer)
