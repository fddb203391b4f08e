"""The database ciphertext store (`[storage] ciphertext = "database"`, PostgreSQL only).

- `stored_objects`: one row per ciphertext (random name, last day written, committed or not);
- `stored_chunks`: its bytes, in numbered chunks, deleted with it.

Created on every backend (empty unless the database store is chosen). On PostgreSQL the chunks are
stored uncompressed out of line (`STORAGE EXTERNAL`): ciphertext does not compress, and trying
costs CPU on every write.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_objects",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("committed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_stored_objects")),
    )
    op.create_table(
        "stored_chunks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"], ["stored_objects.name"],
            name=op.f("fk_stored_chunks_name_stored_objects"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name", "seq", name=op.f("pk_stored_chunks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stored_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("stored_chunks")
    op.drop_table("stored_objects")
