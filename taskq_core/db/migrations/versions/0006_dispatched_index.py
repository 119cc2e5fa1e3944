"""The sweeper's lost-dispatch check: an index of the pending tasks whose id was pushed to Redis,
by queue, priority and when it was pushed, so the check reads only the tasks pushed before a
list's popping point (the lost ones), not the tasks waiting for their run_at.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would block every
    # enqueue and claim for as long as it reads a tasks table that may hold millions of rows.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_tasks_dispatched",
            "tasks",
            ["queue", "priority", "enqueued_at", "id"],
            postgresql_where=sa.text("status = 'pending' AND enqueued_at IS NOT NULL"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_tasks_dispatched", table_name="tasks", postgresql_concurrently=True)
