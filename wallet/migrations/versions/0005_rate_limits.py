"""rate limits: per-window request counts shared by every process and instance

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 10:00:00

Existing data: none (the limiter counted in each process's memory before). The table is
UNLOGGED on PostgreSQL (the dialect seam decides): a crash may forget the counts of the
current minute, and commits that wrote only this table wait for no WAL flush.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from wallet.store import _dialect

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "rate_limit_window",
        sa.Column("key", _text(length=200), nullable=False),
        sa.Column("resets_at", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "resets_at", name=op.f("pk_rate_limit_window")),
    )
    bind = op.get_bind()
    _dialect.dialect_of(bind).make_volatile(bind, "rate_limit_window")


def downgrade() -> None:
    op.drop_table("rate_limit_window")
