"""The database schema: the `tasks` table and the task status values."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
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
from sqlalchemy.dialects.postgresql import JSONB


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
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
    Column("idempotency_key", Text, unique=True),
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
)
