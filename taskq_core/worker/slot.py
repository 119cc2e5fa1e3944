"""A runner's slot: the memory it shares with its supervisor (the worker process).

The runner claims, runs and records its own tasks (runner.py); the supervisor must still be able
to stop the one it runs (a timeout, a cancellation, a shutdown) and to settle what it held when
it dies (runners.py). The slot tells it both, without a message per task:

- what runs now: task id, attempt, start, deadline and how many claimed tasks wait behind it,
  under a sequence number that is odd while the runner writes them (a seqlock), so a read that
  overlaps a write is seen as torn and taken again. The supervisor acts on a read only once it
  has frozen the runner (SIGSTOP), when the slot cannot change;
- the outcomes decided and not yet known to be recorded, each a JSON line, in the order the
  tasks ran. A runner killed before it recorded them leaves them here, so a task that ran is
  recorded as it ended, not handed back as if it had not run. The runner empties the buffer
  once its group commit is through; written twice, an outcome is refused the second time by
  the fence (the row is no longer running under that attempt), so nothing is recorded twice;
- the runner's own liveness stamp, written by a timer on its event loop and as each task begins
  and ends: one that goes stale between tasks (the runner is frozen, or its loop is stuck)
  would otherwise keep its claims for good, since the supervisor renews their leases;
- from the supervisor: a liveness stamp (the runner stops claiming when it is stale, since a
  supervisor that does not run renews no lease), a stop request, the ids of tasks cancelled
  before they started, which the runner skips, and a revocation: the tasks waiting behind a slow
  one were handed back by the supervisor, and the runner must not start them.

Every field is an aligned 8-byte word, written whole; an outcome's bytes are written before the
word that counts them. A `memfd` holds it, passed to the runner with its pipes, so that runners
of a fork server spawned later share a slot too.
"""

from __future__ import annotations

import json
import mmap
import os
import time
from dataclasses import dataclass
from typing import Any

from taskq_core.records import AttemptOutcome, ClaimedTask, Finish, TaskStatus

# Offsets of the words. Runner-written: SEQ..DEADLINE and USED; supervisor-written: the rest.
SEQ, TASK, ATTEMPT, STARTED, DEADLINE, WAITING = 0, 8, 16, 24, 32, 40
ALIVE, STOP, SKIPS, REVOKED = 48, 56, 64, 72
LOOKING = 80  # runner-written: 1 while it pops ids and passes on those it does not run
ROOM = 88  # supervisor-written: how many more tasks of its own types it can take now
BEAT = 96  # runner-written: when its event loop, or a task's start or end, last ran
SKIP_IDS = 104  # SKIP_COUNT words: the ring of ids cancelled before they started
SKIP_COUNT = 64
CLAIMED = SKIP_IDS + 8 * SKIP_COUNT  # runner-written: how many ids its last claim took
CLAIMED_IDS = CLAIMED + 8  # CLAIMED_MAX words: those ids, in the order they run
CLAIMED_MAX = 256
USED = CLAIMED_IDS + 8 * CLAIMED_MAX  # bytes of outcome lines in the buffer
RECORDED = USED + 8  # bytes of them known to be recorded (their writes may overlap later tasks)
BUFFER = RECORDED + 8
SIZE = 1024 * 1024  # bytes in all: the outcome buffer holds the rest
READ_TRIES = 100  # torn reads of what runs before the supervisor takes the runner as between tasks
CAPACITY = SIZE - BUFFER


@dataclass(frozen=True, slots=True)
class Running:
    """What a runner's slot says it runs: a task's attempt, since `started` (monotonic ns),
    until `deadline` (monotonic ns; 0: none), with `waiting` claimed tasks behind it."""

    task_id: int
    attempt: int
    started: int
    deadline: int
    waiting: int

    @property
    def attempt_of(self) -> tuple[int, int]:
        """(task id, attempt): which attempt of which task."""
        return self.task_id, self.attempt


class Slot:
    """One runner's shared memory: the runner's end and the supervisor's."""

    def __init__(self, fd: int) -> None:
        """Map the memory of `fd` (made by `create`); the slot owns the descriptor."""
        self.fd = fd
        self._map = mmap.mmap(fd, SIZE)
        # Native 8-byte words: each read or write is one aligned load or store. The struct
        # module's "<q" goes byte by byte, and the other process saw torn values (a liveness
        # stamp read half old, half new looked ten seconds stale).
        self._words = memoryview(self._map)[:BUFFER].cast("q")
        self._skips_seen = 0  # the runner's: how far it has read the skip ring

    @classmethod
    def create(cls) -> Slot:
        fd = os.memfd_create("taskq-slot", os.MFD_CLOEXEC)
        os.ftruncate(fd, SIZE)
        made = cls(fd)
        made.beat()  # the runner's start counts from now
        return made

    def close(self) -> None:
        self._words.release()
        self._map.close()
        os.close(self.fd)

    def _get(self, offset: int) -> int:
        value: int = self._words[offset // 8]
        return value

    def _set(self, offset: int, value: int) -> None:
        self._words[offset // 8] = value

    # ---- the runner's end ------------------------------------------------------------------------

    def claimed(self, ids: list[int]) -> None:
        """The runner's claim took `ids` (at most CLAIMED_MAX), to run in this order."""
        for n, task_id in enumerate(ids[:CLAIMED_MAX]):
            self._set(CLAIMED_IDS + 8 * n, task_id)
        self._set(CLAIMED, min(len(ids), CLAIMED_MAX))

    def begin(self, task_id: int, attempt: int, timeout: float | None, waiting: int) -> int:
        """A task's attempt starts now (before its code runs), `waiting` claimed ones after it;
        returns when it started (monotonic ns), which names this run."""
        started = time.monotonic_ns()
        deadline = 0 if timeout is None else started + int(timeout * 1e9)
        self._set(BEAT, started)
        seq = self._get(SEQ)
        self._set(SEQ, seq + 1)
        self._set(TASK, task_id)
        self._set(ATTEMPT, attempt)
        self._set(STARTED, started)
        self._set(DEADLINE, deadline)
        self._set(WAITING, waiting)
        self._set(SEQ, seq + 2)
        return started

    def end(self) -> None:
        """The task's code returned (its outcome is in the buffer by now)."""
        seq = self._get(SEQ)
        self._set(SEQ, seq + 1)
        self._set(TASK, 0)
        self._set(SEQ, seq + 2)
        self.beat()  # a long task's end must not look like a stuck loop

    def beat(self) -> None:
        """The runner is alive and moving (its event loop runs, or a task began or ended)."""
        self._set(BEAT, time.monotonic_ns())

    def add_outcome(self, outcome: dict[str, Any]) -> bool:
        """Keep `outcome` until `recorded`; False if the buffer has no room for it (record
        what it holds first)."""
        line = json.dumps(outcome, separators=(",", ":")).encode() + b"\n"
        used = self._get(USED)
        if used + len(line) > CAPACITY:
            return False
        self._map[BUFFER + used : BUFFER + used + len(line)] = line
        self._set(USED, used + len(line))
        return True

    def mark(self) -> int:
        """Where the buffer ends now: the outcomes kept so far are those before it."""
        return self._get(USED)

    def recorded(self, mark: int) -> None:
        """The outcomes before `mark` are committed. Once all are, the buffer starts afresh."""
        if mark >= self._get(USED):
            self._set(USED, 0)  # first: a runner killed in between leaves nothing to record
            self._set(RECORDED, 0)
        else:
            self._set(RECORDED, mark)

    def stopping(self) -> bool:
        return self._get(STOP) != 0

    def room(self) -> int:
        """How many ids of its own types the supervisor could take, as it said last."""
        return self._get(ROOM)

    def looking(self, looking: bool) -> None:
        """The runner is about to pop (True); or it has claimed what it popped and written the
        message passing on the rest to its supervisor (False)."""
        self._set(LOOKING, int(looking))

    def is_looking(self) -> bool:
        return self._get(LOOKING) != 0

    def revoked(self, started: int) -> bool:
        """Whether the tasks waiting behind the run that began at `started` (monotonic ns: one
        run's own) were taken back; read once, between tasks."""
        if self._get(REVOKED) != started:
            return False
        self._set(REVOKED, 0)  # the supervisor writes it only while a task runs: not now
        return True

    def supervisor_age(self) -> float:
        """Seconds since the supervisor last said it was alive."""
        return (time.monotonic_ns() - self._get(ALIVE)) / 1e9

    def skipped(self) -> set[int]:
        """Ids cancelled since the last call (at most the ring's size of them)."""
        written = self._get(SKIPS)
        first = max(self._skips_seen, written - SKIP_COUNT)
        ids = {self._get(SKIP_IDS + 8 * (n % SKIP_COUNT)) for n in range(first, written)}
        self._skips_seen = written
        return ids

    # ---- the supervisor's end --------------------------------------------------------------------

    def running(self) -> Running | None:
        """What runs now; None between tasks. A torn read is taken again, a few times: a runner
        stopped or killed in the middle of its write leaves it torn for good, and its task
        either has not started or has ended (its code runs after the write, or ran before)."""
        for _ in range(READ_TRIES):
            seq = self._get(SEQ)
            if seq % 2 == 0:
                task_id = self._get(TASK)
                running = self._read(task_id)
                if self._get(SEQ) == seq:
                    return running if task_id else None
            time.sleep(0)
        return None

    def runner_age(self) -> float:
        """Seconds since the runner last said it moves (meaningful between tasks: a task's
        code holds the runner's loop for as long as it runs)."""
        return (time.monotonic_ns() - self._get(BEAT)) / 1e9

    def running_frozen(self) -> Running | None:
        """What ran when the runner was frozen or killed: a write it was in the middle of had
        not finished, so its task had not started (its code runs after the write)."""
        if self._get(SEQ) % 2 == 1:
            return None
        task_id = self._get(TASK)
        return self._read(task_id) if task_id else None

    def _read(self, task_id: int) -> Running:
        return Running(
            task_id,
            self._get(ATTEMPT),
            self._get(STARTED),
            self._get(DEADLINE),
            self._get(WAITING),
        )

    def claimed_ids(self) -> list[int]:
        """The ids of the runner's last claim, in the order they run."""
        return [self._get(CLAIMED_IDS + 8 * n) for n in range(self._get(CLAIMED))]

    def waiting(self, running: Running) -> list[int]:
        """The claimed ids waiting behind `running` (read while the runner is frozen)."""
        ids = self.claimed_ids()
        return ids[len(ids) - running.waiting :] if running.waiting else []

    def outcomes(self) -> list[dict[str, Any]]:
        """The outcomes decided and not yet recorded, in the order the tasks ended."""
        used, recorded = self._get(USED), self._get(RECORDED)
        if recorded >= used:
            return []
        data = bytes(self._map[BUFFER + recorded : BUFFER + used])
        return [json.loads(line) for line in data.splitlines()]

    def alive(self) -> None:
        """The supervisor runs (stamped often: see runner.Config.supervisor_stale)."""
        self._set(ALIVE, time.monotonic_ns())

    def revoke(self, running: Running) -> None:
        """The tasks waiting behind `running` are taken back: the runner must not start them.
        Only while the runner is frozen running it: it reads this once that run ends."""
        self._set(REVOKED, running.started)

    def set_room(self, room: int) -> None:
        self._set(ROOM, room)

    def stop(self) -> None:
        """Ask the runner to stop: it finishes its task, records, hands back the rest, exits."""
        self._set(STOP, 1)

    def skip(self, task_id: int) -> None:
        """`task_id` was cancelled: if the runner holds it unstarted, it must not start it."""
        written = self._get(SKIPS)
        self._set(SKIP_IDS + 8 * (written % SKIP_COUNT), task_id)
        self._set(SKIPS, written + 1)


def entry(task: ClaimedTask, finish: Finish) -> dict[str, Any]:
    """An outcome as the slot's buffer keeps it: what the fenced write needs (`items`)."""
    return {
        "task": [task.id, task.task_type, task.priority, task.attempt, task.max_attempts],
        "status": finish.status.value,
        "outcome": finish.outcome.value,
        "result": finish.result,
        "error": finish.error,
        "retry_in": finish.retry_in,
        "artifacts": list(finish.artifacts),
        "progress": finish.progress,
    }


def items(entries: list[dict[str, Any]]) -> list[tuple[ClaimedTask, Finish]]:
    """The outcomes `entry` kept, to record."""
    found = []
    for kept in entries:
        task_id, task_type, priority, attempt, max_attempts = kept["task"]
        task = ClaimedTask(task_id, task_type, {}, priority, attempt, max_attempts, None)
        finish = Finish(
            TaskStatus(kept["status"]),
            AttemptOutcome(kept["outcome"]),
            result=kept["result"],
            error=kept["error"],
            retry_in=kept["retry_in"],
            artifacts=tuple(kept["artifacts"]),
            progress=kept["progress"],
        )
        found.append((task, finish))
    return found
