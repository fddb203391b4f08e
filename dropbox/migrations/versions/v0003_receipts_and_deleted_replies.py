"""Sealed receipts of submissions, bundle reply ids, and the replies sources deleted.

- `submissions.receipt`: what arrived (file names, sizes, hash prefixes) sealed with the source's
  receipt key (keys/receipt.py); deleted with its submission. NULL for earlier submissions.
- `replies.bundle_reply_id`: the reply's id in the investigator's reply bundle. NULL for replies
  stored before (their deletion is then not reported).
- `deleted_replies`: (investigator, bundle reply id) of replies their sources deleted, without a
  day or a source: what the author's `transfer status` shows.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("receipt", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bundle_reply_id", sa.String(length=128), nullable=True))
    op.create_table(
        "deleted_replies",
        sa.Column("investigator", sa.String(length=128), nullable=False),
        sa.Column("reply_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("investigator", "reply_id", name=op.f("pk_deleted_replies")),
    )


def downgrade() -> None:
    op.drop_table("deleted_replies")
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.drop_column("bundle_reply_id")
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_column("receipt")
