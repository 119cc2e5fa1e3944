"""The randomized chaos run: traffic through every enqueue path while faults strike at random
moments, then a check of everything the servers hold (see docs/reliability.md).

The seed decides the fault schedule (kinds, moments, lengths, targets): the same seed replays the
same schedule. Traffic runs in threads alongside, its mix drawn from the seed too, its timing left
to the machine.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from taskq_core.client import Client
from taskq_core.db import engines

KINDS = (
    "kill_worker",
    "pause_worker",
    "kill_api",
    "crash_postgres",
    "flush_redis",
    "restart_redis",
    "cut_network",
)
PATHS = ("single", "idempotent", "batch", "client", "enqueue_in")
LEASE = 2.0  # seconds: the workers' lease; pauses and cuts last longer than this


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start
    kind: str
    length: float  # seconds the fault lasts (a pause, a cut, a server down)
    target: int  # which worker, for worker faults (modulo the number of workers)


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


# ---- what the traffic submits -----------------------------------------------------------------

# kind: (task type, input, options, the status it must end in when nothing else explains it)
KIND_SPECS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "ok": ("AsyncSleepTask", {"seconds": 0.2}, {"max_attempts": 5}, "completed"),
    "sync_ok": ("BlockingSleepTask", {"seconds": 0.1}, {"max_attempts": 5}, "completed"),
    "fail": ("FailTask", {"message": "chaos"}, {"max_attempts": 2}, "failed"),
    "retry": (
        "RetryTask",
        {"after": 0.3, "succeed_on_attempt": 2},
        {"max_attempts": 5},
        "completed",
    ),
    "timeout": (
        "AsyncSleepTask",
        {"seconds": 30},
        {"max_attempts": 2, "timeout_seconds": 0.5},
        "failed",
    ),
    "cancel": ("AsyncSleepTask", {"seconds": 6}, {"max_attempts": 5}, "cancelled"),
}
# Errors a fault explains: the task lost its worker on its last attempt, or its own Redis call
# (the testkit records each run in Redis) met Redis down.
FAULT_ERRORS = {"LeaseExpiredError", "ConnectionError", "TimeoutError", "BusyLoadingError"}


@dataclass
class Ledger:
    """What the traffic did: ids answered 201 (with their kind), attempts of unknown result."""

    kinds: dict[int, str] = field(default_factory=dict)
    paths: Counter[str] = field(default_factory=Counter)
    uncertain: int = 0  # submissions whose result never came back (they may have committed)
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # what the client retried after
    cancels: dict[int, int] = field(default_factory=dict)  # id: status of the cancel request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, ids: list[int], kind: str, path: str) -> None:
        with self.lock:
            for i in ids:
                assert i not in self.kinds, f"id {i} handed out twice"
                self.kinds[i] = kind
            self.paths[path] += len(ids)


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
        http = httpx.Client(base_url=self.api_url, timeout=10)
        client = Client(redis_url=self.redis_url, database_url=self.database_url)
        engine = engines.sync_engine(self.database_url)
        try:
            while not self.stop.is_set():
                kind = rng.choice(list(KIND_SPECS))
                path = rng.choice(PATHS)
                ids = self._submit(rng, http, client, engine, kind, path)
                self.ledger.accept(ids, kind, path)
                if kind == "cancel":
                    for task_id in ids:
                        self._cancel_later(rng, http, task_id)
                self.stop.wait(rng.uniform(0.02, 0.15))
        finally:
            http.close()
            client.close()
            engine.dispose()

    def _body(self, kind: str) -> dict[str, Any]:
        task_type, input_data, options, _ = KIND_SPECS[kind]
        return {"task_type": task_type, "input_data": input_data, **options}

    def _submit(
        self,
        rng: random.Random,
        http: httpx.Client,
        client: Client,
        engine: Any,
        kind: str,
        path: str,
    ) -> list[int]:
        body = self._body(kind)
        if path == "single":
            # No key: a lost answer may hide a commit, so a retry may make a twin (counted).
            return self._post(lambda: http.post("/tasks/", json=body), single=True)
        if path == "idempotent":
            key = {"Idempotency-Key": uuid.uuid4().hex}
            return self._post(lambda: http.post("/tasks/", json=body, headers=key), single=True)
        if path == "batch":
            batch = {"tasks": [body] * rng.randint(2, 6)}
            return self._post(lambda: http.post("/tasks/batch", json=batch), single=False)
        task_type, input_data, options, _ = KIND_SPECS[kind]
        for _ in range(100):
            if self.stop.is_set():
                return []
            try:
                if path == "client":
                    return [client.enqueue(task_type, input_data, **options)]
                with Session(engine) as session:
                    task_id = client.enqueue_in(session, task_type, input_data, **options)
                    session.commit()
                    return [task_id]
            except (DBAPIError, RedisError, OSError) as exc:  # it may or may not have committed
                with self.ledger.lock:
                    self.ledger.errors[f"{path}: {type(exc).__name__}"] += 1
                    self.ledger.uncertain += 1
                    self.ledger.retries += 1
                self.stop.wait(0.5)
        return []

    def _post(self, send: Callable[[], httpx.Response], *, single: bool) -> list[int]:
        for _ in range(100):
            if self.stop.is_set():
                return []
            try:
                response = send()
            except httpx.HTTPError as exc:  # the API died mid-request: it may have committed
                with self.ledger.lock:
                    self.ledger.errors[f"http: {type(exc).__name__}"] += 1
                    self.ledger.uncertain += 1
                    self.ledger.retries += 1
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

    def _cancel_later(self, rng: random.Random, http: httpx.Client, task_id: int) -> None:
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
                    if response.status_code in (200, 202, 409):
                        return
                    time.sleep(0.5)

        timer = threading.Timer(rng.uniform(0.3, 2.0), cancel)
        timer.daemon = True
        timer.start()
        self.timers.append(timer)
