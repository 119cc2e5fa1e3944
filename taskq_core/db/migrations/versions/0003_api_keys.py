"""API keys (stored as hashes) and who submitted each task, which scopes its Idempotency-Key.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("scopes", ARRAY(sa.Text), nullable=False),
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.CheckConstraint(
            "cardinality(scopes) >= 1 AND scopes <@ ARRAY['read', 'submit', 'admin']",
            name="ck_api_keys_scope_values",
        ),
    )
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column("tasks", sa.Column("submitted_by", sa.Text, nullable=False, server_default=""))
    # Before keys, every API request was anonymous: the keys already used belong to open mode.
    op.execute("UPDATE tasks SET submitted_by = 'open' WHERE idempotency_key IS NOT NULL")
    op.drop_constraint("uq_tasks_idempotency_key", "tasks", type_="unique")
    op.create_unique_constraint(
        "uq_tasks_submitted_by_idempotency_key", "tasks", ["submitted_by", "idempotency_key"]
    )


def downgrade() -> None:
    op.drop_constraint("uq_tasks_submitted_by_idempotency_key", "tasks", type_="unique")
    # Fails if two submitters used the same key: nothing is dropped silently.
    op.create_unique_constraint("uq_tasks_idempotency_key", "tasks", ["idempotency_key"])
    op.drop_column("tasks", "submitted_by")
    op.drop_table("api_keys")
