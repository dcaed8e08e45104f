"""Events get a conversation position (``history_key``), so input consumed mid-turn is placed
where the loop took it in.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("history_key", sa.BigInteger(), nullable=True))
    op.execute("UPDATE events SET history_key = 2 * seq WHERE processed_at IS NOT NULL")
    op.create_index("ix_events_session_history", "events", ["session_id", "history_key"])


def downgrade() -> None:
    op.drop_index("ix_events_session_history", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("history_key")
