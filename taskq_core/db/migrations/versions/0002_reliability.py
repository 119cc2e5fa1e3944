"""Reliability: dispatch and cancellation columns, attempt history, workers, sweeper leases.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("idempotency_hash", sa.Text))
    op.add_column("tasks", sa.Column("enqueued_at", sa.DateTime(timezone=True)))
    op.add_column("tasks", sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
    # Tasks that existed before were pushed when created.
    op.execute("UPDATE tasks SET enqueued_at = created_at WHERE status = 'pending'")
    op.create_index(
        "ix_tasks_due",
        "tasks",
        ["run_at"],
        postgresql_where=sa.text("status = 'pending' AND enqueued_at IS NULL"),
    )
    op.create_table(
        "task_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "task_id",
            sa.BigInteger,
            sa.ForeignKey("tasks.id", ondelete="CASCADE", name="fk_task_attempts_task_id_tasks"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column(
            "finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", JSONB),
        sa.CheckConstraint(
            "outcome IN ('completed', 'failed', 'retry', 'timeout', 'lost', 'cancelled', "
            "'handed_back')",
            name="ck_task_attempts_outcome_values",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_task_attempts"),
    )
    op.create_index("ix_task_attempts_task_id", "task_attempts", ["task_id", "id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "last_beat_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("running", ARRAY(sa.BigInteger), nullable=False, server_default="{}"),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_table(
        "sweeper_leases",
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("queue", name="pk_sweeper_leases"),
    )


def downgrade() -> None:
    op.drop_table("sweeper_leases")
    op.drop_table("workers")
    op.drop_table("task_attempts")
    op.drop_index("ix_tasks_due", table_name="tasks")
    op.drop_column("tasks", "cancel_requested_at")
    op.drop_column("tasks", "enqueued_at")
    op.drop_column("tasks", "idempotency_hash")
