"""PostgreSQL: the guard of an optimistic journal transaction (``SessionStore.expect``).

``hangar_expect_session(id, version)`` locks the session row if it is still the version a
transaction was built on (its ``xmin``: every update of a row gives it a new one, whoever
makes it) and otherwise raises SQLSTATE HG001, which aborts the transaction. Under READ
COMMITTED a row updated while the guard waited for its lock is re-checked in its newest version,
so a concurrent change is always seen. SQLite needs no guard: its writers are serialised.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION hangar_expect_session(session_id text, version xid)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM 1 FROM sessions WHERE id = session_id AND xmin = version FOR UPDATE;
          IF NOT FOUND THEN
            RAISE EXCEPTION 'session % changed since this transaction was built on it', session_id
              USING ERRCODE = 'HG001';
          END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS hangar_expect_session(text, xid)")
