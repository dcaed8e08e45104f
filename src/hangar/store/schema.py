"""Table definitions (SQLAlchemy Core). Migrations under ``migrations/versions`` create them;
``tests/unit/test_migrations.py`` checks that a migrated database equals this metadata.

Conventions: every timestamp is an integer of microseconds since the Unix epoch (portable,
sortable, exact); wire objects that have no column of their own live in a JSON ``data`` column.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Micros = sa.BigInteger

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("hint", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # "admin" | "environment"
    sa.Column("environment_id", sa.String(64), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("revoked_at", Micros, nullable=True),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_agents_ws_created", "workspace_id", "created_at", "id"),
)

agent_versions = sa.Table(
    "agent_versions",
    metadata,
    sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
)

environments = sa.Table(
    "environments",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_environments_ws_created", "workspace_id", "created_at", "id"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("agent_version", sa.Integer, nullable=False),
    sa.Column("environment_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_sessions_ws_created", "workspace_id", "created_at", "id"),
    sa.Index("ix_sessions_agent", "agent_id", "agent_version"),
    sa.Index("ix_sessions_status", "status"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("thread_id", sa.String(64), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("processed_at", Micros, nullable=True),
    # Position in the conversation the model sees: 2*seq for events that were processed when
    # appended; 2*(last seq at consumption)+1 for client input consumed later (a message sent
    # mid-turn joins the conversation where the loop took it in, not where it was queued).
    sa.Column("history_key", sa.BigInteger, nullable=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_events_session_type", "session_id", "type"),
    sa.Index("ix_events_session_history", "session_id", "history_key"),
    # Client input the loop has not consumed yet: a handful of rows at any time.
    sa.Index(
        "ix_events_pending",
        "session_id",
        "seq",
        sqlite_where=sa.text("processed_at IS NULL"),
        postgresql_where=sa.text("processed_at IS NULL"),
    ),
)

threads = sa.Table(
    "threads",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("parent_thread_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_threads_session", "session_id", "created_at"),
)

session_resources = sa.Table(
    "session_resources",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("secret", sa.Text, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Index("ix_session_resources_session", "session_id", "created_at"),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(1024), nullable=False),
    sa.Column("mime_type", sa.String(255), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("downloadable", sa.Boolean, nullable=False),
    sa.Column("scope_type", sa.String(32), nullable=True),
    sa.Column("scope_id", sa.String(64), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("expires_at", Micros, nullable=True),
    sa.Index("ix_files_ws_created", "workspace_id", "created_at", "id"),
    sa.Index("ix_files_scope", "scope_id"),
)

# Self-hosted work queue (API §1.3). ``state`` is queued | starting | active | stopping | stopped.
# ``polled_at`` marks an item handed out by a poll and not acked yet (reclaimable after the poll's
# ``reclaim_older_than_ms``); ``lease_expires_at`` ends a held lease (starting/active/stopping);
# ``lease_heartbeat_at`` is the heartbeat the next one must echo (null: none in this lease).
# ``token_hash`` is the SHA-256 of the item's sessions token, null once revoked.
work_items = sa.Table(
    "work_items",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("environment_id", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("ttl_seconds", sa.Integer, nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=True, unique=True),
    sa.Column("polled_by", sa.String(255), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("queued_at", Micros, nullable=False),
    sa.Column("polled_at", Micros, nullable=True),
    sa.Column("acknowledged_at", Micros, nullable=True),
    sa.Column("started_at", Micros, nullable=True),
    sa.Column("latest_heartbeat_at", Micros, nullable=True),
    sa.Column("lease_heartbeat_at", Micros, nullable=True),
    sa.Column("lease_expires_at", Micros, nullable=True),
    sa.Column("stop_requested_at", Micros, nullable=True),
    sa.Column("stopped_at", Micros, nullable=True),
    sa.Index("ix_work_items_env_state", "environment_id", "state", "created_at"),
    sa.Index("ix_work_items_env_created", "environment_id", "created_at", "id"),
    sa.Index("ix_work_items_session", "session_id", "state"),
)

# Workers seen polling an environment (for ``workers_polling`` in the queue stats).
work_pollers = sa.Table(
    "work_pollers",
    metadata,
    sa.Column("environment_id", sa.String(64), primary_key=True),
    sa.Column("worker_id", sa.String(255), primary_key=True),
    sa.Column("last_poll_at", Micros, nullable=False),
)

# Vaults and their credentials (API §1.8). A credential's non-secret ``auth`` fields are in
# ``auth`` (JSON); its secret fields are in ``secret``, sealed by ``hangar.crypto`` (AES-GCM, the
# credential id as associated data), NULL once archived. ``match_key`` is what must be unique
# among a vault's active credentials: the SHA-256 (hex) of ``mcp\0<mcp_server_url>`` or
# ``env\0<secret_name>`` (a hash keeps the unique index small whatever the URL's length).
vaults = sa.Table(
    "vaults",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("display_name", sa.String(255), nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_vaults_ws_created", "workspace_id", "created_at", "id"),
)

vault_credentials = sa.Table(
    "vault_credentials",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("vault_id", sa.String(64), sa.ForeignKey("vaults.id", ondelete="CASCADE"), nullable=False),
    sa.Column("auth_type", sa.String(32), nullable=False),
    sa.Column("match_key", sa.String(64), nullable=False),
    sa.Column("display_name", sa.String(255), nullable=True),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("auth", sa.JSON, nullable=False),
    sa.Column("secret", sa.Text, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_vault_credentials_vault_created", "vault_id", "created_at", "id"),
    sa.Index(
        "ux_vault_credentials_active_key",
        "vault_id",
        "match_key",
        unique=True,
        sqlite_where=sa.text("archived_at IS NULL"),
        postgresql_where=sa.text("archived_at IS NULL"),
    ),
)

# MCP tunnels (API §1.10). ``domain`` is unique forever: archived rows are kept, never deleted.
# The connector token is stored twice: sealed (``token``, shown again by reveal_token) and as
# its SHA-256 (``token_hash``, how a connecting ``hangar tunnel`` client is recognised); both
# are cleared when the tunnel is archived.
tunnels = sa.Table(
    "tunnels",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("display_name", sa.String(255), nullable=True),
    sa.Column("domain", sa.String(255), nullable=False, unique=True),
    sa.Column("token_id", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("token", sa.Text, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_tunnels_ws_created", "workspace_id", "created_at", "id"),
)

tunnel_certificates = sa.Table(
    "tunnel_certificates",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("tunnel_id", sa.String(64), sa.ForeignKey("tunnels.id"), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("pem", sa.Text, nullable=False),
    sa.Column("expires_at", Micros, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("archived_at", Micros, nullable=True),
    sa.Index("ix_tunnel_certificates_tunnel_created", "tunnel_id", "created_at", "id"),
)

# Who revealed or rotated a tunnel's token, when, and why (never the token itself).
tunnel_audit = sa.Table(
    "tunnel_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tunnel_id", sa.String(64), nullable=False),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # "reveal_token" | "rotate_token" | "archive"
    sa.Column("token_id", sa.String(64), nullable=True),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", Micros, nullable=False),
    sa.Index("ix_tunnel_audit_tunnel", "tunnel_id", "id"),
)
