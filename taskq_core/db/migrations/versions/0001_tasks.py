"""The tasks table, with the columns retries, delays and leases will use.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("task_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("input_data", JSONB, nullable=False),
        sa.Column("result", JSONB),
        sa.Column("error", JSONB),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout_seconds", sa.Double),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("worker_id", sa.Text),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("idempotency_key", sa.Text),
        sa.CheckConstraint("priority BETWEEN 1 AND 5", name="ck_tasks_priority_range"),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name="ck_tasks_status_values",
        ),
        sa.CheckConstraint("max_attempts >= 1", name="ck_tasks_max_attempts_positive"),
        sa.UniqueConstraint("idempotency_key", name="uq_tasks_idempotency_key"),
    )
    op.create_index(
        "ix_tasks_pending",
        "tasks",
        ["queue", sa.text("priority DESC"), "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_tasks_running_lease",
        "tasks",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index("ix_tasks_status_id", "tasks", ["status", "id"])
    op.create_index("ix_tasks_task_type_id", "tasks", ["task_type", "id"])


def downgrade() -> None:
    op.drop_table("tasks")
