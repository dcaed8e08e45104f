"""Self-hosted work queue: work items (with their sessions-token hash) and the workers seen polling.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("environment_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=True),
        sa.Column("polled_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("queued_at", sa.BigInteger(), nullable=False),
        sa.Column("polled_at", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_at", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("latest_heartbeat_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_heartbeat_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("stop_requested_at", sa.BigInteger(), nullable=True),
        sa.Column("stopped_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_work_items_env_state", "work_items", ["environment_id", "state", "created_at"])
    op.create_index("ix_work_items_env_created", "work_items", ["environment_id", "created_at", "id"])
    op.create_index("ix_work_items_session", "work_items", ["session_id", "state"])
    op.create_table(
        "work_pollers",
        sa.Column("environment_id", sa.String(length=64), nullable=False),
        sa.Column("worker_id", sa.String(length=255), nullable=False),
        sa.Column("last_poll_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("environment_id", "worker_id"),
    )


def downgrade() -> None:
    op.drop_table("work_pollers")
    op.drop_index("ix_work_items_session", table_name="work_items")
    op.drop_index("ix_work_items_env_created", table_name="work_items")
    op.drop_index("ix_work_items_env_state", table_name="work_items")
    op.drop_table("work_items")
