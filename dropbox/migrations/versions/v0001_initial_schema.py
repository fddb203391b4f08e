"""Initial schema: sources, submissions, their ciphertexts, replies. Days only, never times.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("lookup_id", sa.String(length=128), nullable=False),
        sa.Column("reply_recipient", sa.String(length=128), nullable=False),
        sa.Column("created_day", sa.String(length=10), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("lookup_id", name=op.f("uq_sources_lookup_id")),
    )
    op.create_table(
        "replies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("investigator", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_replies_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replies")),
        sa.UniqueConstraint("name", name=op.f("uq_replies_name")),
    )
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replies_source_id"), ["source_id"], unique=False)

    op.create_table(
        "submissions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("acknowledged_day", sa.String(length=10), nullable=True),
        sa.Column("delete_after_day", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_submissions_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_submissions_acknowledged_day"), ["acknowledged_day"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_submissions_source_id"), ["source_id"], unique=False)

    op.create_table(
        "ciphertexts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("submission_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "kind IN ('message', 'file', 'manifest')", name=op.f("ck_ciphertexts_kind")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_ciphertexts_submission_id_submissions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ciphertexts")),
        sa.UniqueConstraint("name", name=op.f("uq_ciphertexts_name")),
    )
    with op.batch_alter_table("ciphertexts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ciphertexts_submission_id"), ["submission_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ciphertexts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ciphertexts_submission_id"))

    op.drop_table("ciphertexts")
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submissions_source_id"))
        batch_op.drop_index(batch_op.f("ix_submissions_acknowledged_day"))

    op.drop_table("submissions")
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replies_source_id"))

    op.drop_table("replies")
    op.drop_table("sources")
