"""The idempotency key's uniqueness as a partial index over the tasks that have a key: the
unique constraint on (submitted_by, idempotency_key) held an entry for every task, keyed or not,
which every insert and every status change (none of them is a HOT update) wrote again.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_NAME = "uq_tasks_submitted_by_idempotency_key"
_BUILDING = "uq_tasks_submitted_by_idempotency_key_new"


def upgrade() -> None:
    # Built CONCURRENTLY, outside the migration's transaction, so enqueues and claims go on while
    # it reads the table; the constraint keeps enforcing uniqueness until the index can.
    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY {_BUILDING} ON tasks (submitted_by, idempotency_key)"
            " WHERE idempotency_key IS NOT NULL"
        )
    op.drop_constraint(_NAME, "tasks", type_="unique")
    op.execute(f"ALTER INDEX {_BUILDING} RENAME TO {_NAME}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY {_BUILDING} ON tasks (submitted_by, idempotency_key)"
        )
    op.drop_index(_NAME, table_name="tasks")
    op.execute(f"ALTER TABLE tasks ADD CONSTRAINT {_NAME} UNIQUE USING INDEX {_BUILDING}")
