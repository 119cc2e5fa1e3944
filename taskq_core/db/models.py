"""The database schema as SQLAlchemy tables: what Alembic migrates and the API queries."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from taskq_core.records import AttemptOutcome, TaskStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

_status_values = ", ".join(f"'{s.value}'" for s in TaskStatus)

tasks = Table(
    "tasks",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("queue", Text, nullable=False, server_default="default"),
    Column("task_type", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=TaskStatus.PENDING.value),
    Column("priority", SmallInteger, nullable=False),
    Column("input_data", JSONB, nullable=False),
    Column("result", JSONB),
    # {"type", "message", "traceback"} of the last failure
    Column("error", JSONB),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_seconds", Double),
    # Not before this instant: delays and retry back-off.
    Column("run_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("worker_id", Text),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("idempotency_key", Text),
    # A fingerprint of the request body, so a replayed key with another body is refused.
    Column("idempotency_hash", Text),
    # When the id was last pushed to Redis; NULL while the task waits for run_at (delay, retry).
    Column("enqueued_at", DateTime(timezone=True)),
    Column("cancel_requested_at", DateTime(timezone=True)),
    # {"done", "total", "message", "at"}: the last `ctx.progress` of the current attempt.
    Column("progress", JSONB),
    # Who submitted it: `key:NAME`, `env:...` or `open` (see api/auth.py); '' when submitted
    # from Python. An Idempotency-Key is unique per submitter, so no client can pre-claim
    # another's keys.
    Column("submitted_by", Text, nullable=False, server_default=""),
    # Partial: most tasks have no key, and an entry for each would be written again at every
    # status change (none is a HOT update).
    Index(
        "uq_tasks_submitted_by_idempotency_key",
        "submitted_by",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    CheckConstraint("priority BETWEEN 1 AND 5", name="priority_range"),
    CheckConstraint(f"status IN ({_status_values})", name="status_values"),
    CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
    # Hot paths stay O(log n) whatever the number of finished rows.
    Index(
        "ix_tasks_pending",
        "queue",
        text("priority DESC"),
        "id",
        postgresql_where=text("status = 'pending'"),
    ),
    Index(
        "ix_tasks_running_lease", "lease_expires_at", postgresql_where=text("status = 'running'")
    ),
    Index("ix_tasks_status_id", "status", "id"),
    Index("ix_tasks_task_type_id", "task_type", "id"),
    Index(
        "ix_tasks_due",
        "run_at",
        postgresql_where=text("status = 'pending' AND enqueued_at IS NULL"),
    ),
    # The sweeper's lost-dispatch check (worker/sql/lost.py) reads the pending tasks pushed
    # before a list's popping point here, not the ones waiting for their run_at.
    Index(
        "ix_tasks_dispatched",
        "queue",
        "priority",
        "enqueued_at",
        "id",
        postgresql_where=text("status = 'pending' AND enqueued_at IS NOT NULL"),
    ),
    # Retention deletes the oldest finished rows of one status in small batches through this.
    Index(
        "ix_tasks_finished",
        "status",
        "finished_at",
        postgresql_where=text("status IN ('completed', 'failed', 'cancelled')"),
    ),
)


_outcome_values = ", ".join(f"'{o.value}'" for o in AttemptOutcome)

# One row per execution of a task: what ran where, and how it ended.
task_attempts = Table(
    "task_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("task_id", BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", Text),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("outcome", Text, nullable=False),
    Column("error", JSONB),
    CheckConstraint(f"outcome IN ({_outcome_values})", name="outcome_values"),
    Index("ix_task_attempts_task_id", "task_id", "id"),
)

# Live workers, kept fresh by their heartbeat; `GET /workers` reads it.
workers = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("queue", Text, nullable=False),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_beat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("running", ARRAY(BigInteger), nullable=False, server_default="{}"),
    Column("stopped_at", DateTime(timezone=True)),
)

# Which worker runs the sweeper for a queue: a lease row rather than an advisory lock, so it
# works through PgBouncer in transaction mode and survives no session.
sweeper_leases = Table(
    "sweeper_leases",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Files a completed attempt published (`ctx.artifact`); the bytes live in the artifact store
# (TASKQ_ARTIFACTS_URL) under `key`. Deleting a task deletes these rows, and a trigger
# (migration 0005) queues the stored bytes in `artifact_deletions` for the sweeper.
task_artifacts = Table(
    "task_artifacts",
    metadata,
    Column(
        "task_id",
        BigInteger,
        ForeignKey("tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", Text, primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

artifact_deletions = Table(
    "artifact_deletions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("task_id", BigInteger, nullable=False),
    Column("queued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Task types whose tasks must not start: the claim skips them (operations.md, pause and resume).
paused_task_types = Table(
    "paused_task_types",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("task_type", Text, primary_key=True),
    Column("paused_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Periodic tasks: a cron expression in a time zone; `next_run_at` is the next tick to turn into a
# task, advanced in the same statement that inserts the task (worker/scheduler.py).
schedules = Table(
    "schedules",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("cron", Text, nullable=False),
    Column("timezone", Text, nullable=False, server_default="UTC"),
    Column("task_type", Text, nullable=False),
    Column("input_data", JSONB, nullable=False),
    Column("priority", SmallInteger),
    # What ticks missed during an outage become: 'once' (one task for them all) or 'skip' (none).
    Column("catch_up", Text, nullable=False, server_default="once"),
    Column("paused", Boolean, nullable=False, server_default="false"),
    # 'api', or the plugin that declared it (plugin schedules are re-declared at worker start).
    Column("source", Text, nullable=False, server_default="api"),
    Column("next_run_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("catch_up IN ('once', 'skip')", name="catch_up_values"),
    CheckConstraint("priority BETWEEN 1 AND 5", name="priority_range"),
    Index("ix_schedules_due", "queue", "next_run_at", postgresql_where=text("NOT paused")),
)

# One row per tick turned into a task: the unique (schedule, tick) that makes each tick exactly
# one task. It goes with its task when retention deletes it.
schedule_ticks = Table(
    "schedule_ticks",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("schedule", Text, primary_key=True),
    Column("tick_at", DateTime(timezone=True), primary_key=True),
    Column("task_id", BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Index("ix_schedule_ticks_task_id", "task_id"),
)

# API keys: only a SHA-256 of each key is stored (why SHA-256 and not a password hash: db/keys.py).
# A revoked key keeps its row, so its name is never reused and the API never falls back to open.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint(
        "cardinality(scopes) >= 1 AND scopes <@ ARRAY['read', 'submit', 'admin']",
        name="scope_values",
    ),
)
