"""Long work: a task's last reported progress, its published artifacts, and the queue of stored
artifacts to delete once their task is gone.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Whatever deletes a task (retention, `taskq tasks purge|clear`, an operator's DELETE) cascades to
# its artifact rows; this trigger queues their task's storage prefix so the sweeper deletes the
# stored bytes too. Statement-level with a transition table: one INSERT per DELETE statement.
_TRIGGER_FUNCTION = """
CREATE FUNCTION taskq_artifacts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO artifact_deletions (task_id)
    SELECT DISTINCT task_id FROM gone;
    RETURN NULL;
END $$
"""
_TRIGGER = """
CREATE TRIGGER taskq_artifacts_deleted AFTER DELETE ON task_artifacts
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION taskq_artifacts_deleted()
"""


def upgrade() -> None:
    op.add_column("tasks", sa.Column("progress", JSONB))
    op.create_table(
        "task_artifacts",
        sa.Column(
            "task_id",
            sa.BigInteger,
            sa.ForeignKey("tasks.id", ondelete="CASCADE", name="fk_task_artifacts_task_id_tasks"),
            nullable=False,
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("task_id", "name", name="pk_task_artifacts"),
    )
    op.create_table(
        "artifact_deletions",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("task_id", sa.BigInteger, nullable=False),
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_deletions"),
    )
    op.execute(_TRIGGER_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER taskq_artifacts_deleted ON task_artifacts")
    op.execute("DROP FUNCTION taskq_artifacts_deleted()")
    op.drop_table("artifact_deletions")
    op.drop_table("task_artifacts")
    op.drop_column("tasks", "progress")
