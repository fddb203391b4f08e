"""A random session epoch per source, for sessions shared by several intake nodes.

`sources.session_epoch`: copied into a cluster node's sealed session cookie at login and replaced
at logout, which ends that source's sessions on every node (dropbox/cluster.py). Existing sources
get a random value each, like new ones, so nothing tells them apart.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN, not batch mode: SQLite's batch mode copies and drops the table, and
    # dropping `sources` with foreign keys on would delete every submission with it.
    op.add_column("sources", sa.Column("session_epoch", sa.String(length=16), nullable=False,
                                       server_default=""))
    sources = sa.table("sources", sa.column("id", sa.String()),
                       sa.column("session_epoch", sa.String()))
    connection = op.get_bind()
    for (source_id,) in connection.execute(sa.select(sources.c.id)).all():
        connection.execute(sources.update().where(sources.c.id == source_id)
                           .values(session_epoch=secrets.token_hex(8)))


def downgrade() -> None:
    op.drop_column("sources", "session_epoch")
