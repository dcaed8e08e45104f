"""MCP tunnels, their CA certificates, and the audit trail of their tokens.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tunnels",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("archived_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_tunnels_ws_created", "tunnels", ["workspace_id", "created_at", "id"])
    op.create_table(
        "tunnel_certificates",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("tunnel_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("archived_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["tunnel_id"], ["tunnels.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_tunnel_certificates_tunnel_created", "tunnel_certificates", ["tunnel_id", "created_at", "id"]
    )
    op.create_table(
        "tunnel_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tunnel_id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tunnel_audit_tunnel", "tunnel_audit", ["tunnel_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_tunnel_audit_tunnel", table_name="tunnel_audit")
    op.drop_table("tunnel_audit")
    op.drop_index("ix_tunnel_certificates_tunnel_created", table_name="tunnel_certificates")
    op.drop_table("tunnel_certificates")
    op.drop_index("ix_tunnels_ws_created", table_name="tunnels")
    op.drop_table("tunnels")
