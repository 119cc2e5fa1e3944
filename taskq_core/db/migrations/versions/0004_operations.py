"""Operations: retention index, paused task types, schedules and their ticks.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On a table with millions of rows this index takes a while to build (writes wait for it):
    # docs/operations.md says to run the upgrade off-peak.
    op.create_index(
        "ix_tasks_finished",
        "tasks",
        ["status", "finished_at"],
        postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')"),
    )
    op.create_table(
        "paused_task_types",
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("task_type", sa.Text, nullable=False),
        sa.Column(
            "paused_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("queue", "task_type", name="pk_paused_task_types"),
    )
    op.create_table(
        "schedules",
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("task_type", sa.Text, nullable=False),
        sa.Column("input_data", JSONB, nullable=False),
        sa.Column("priority", sa.SmallInteger),
        sa.Column("catch_up", sa.Text, nullable=False, server_default="once"),
        sa.Column("paused", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("source", sa.Text, nullable=False, server_default="api"),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("catch_up IN ('once', 'skip')", name="ck_schedules_catch_up_values"),
        sa.CheckConstraint("priority BETWEEN 1 AND 5", name="ck_schedules_priority_range"),
        sa.PrimaryKeyConstraint("queue", "name", name="pk_schedules"),
    )
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["queue", "next_run_at"],
        postgresql_where=sa.text("NOT paused"),
    )
    op.create_table(
        "schedule_ticks",
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("schedule", sa.Text, nullable=False),
        sa.Column("tick_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "task_id",
            sa.BigInteger,
            sa.ForeignKey("tasks.id", ondelete="CASCADE", name="fk_schedule_ticks_task_id_tasks"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("queue", "schedule", "tick_at", name="pk_schedule_ticks"),
    )
    op.create_index("ix_schedule_ticks_task_id", "schedule_ticks", ["task_id"])


def downgrade() -> None:
    op.drop_table("schedule_ticks")
    op.drop_table("schedules")
    op.drop_table("paused_task_types")
    op.drop_index("ix_tasks_finished", table_name="tasks")
