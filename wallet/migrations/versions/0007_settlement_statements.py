"""settlement statements: payments between organisations, sent and received, with their
signed acknowledgements (DESIGN §11.2)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:30:00

Existing data: none to convert (payments recorded before this with `wallet settlement
record` stay ledger transfers of kind `settle`, without a statement).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wallet.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = wallet.models.UTCDateTime(timezone=True)
_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "settlement_statement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("role", _text(length=10), nullable=False),
        sa.Column("counterparty", _text(length=300), nullable=False),
        sa.Column("jti", _text(length=100), nullable=False),
        sa.Column("digest", _text(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", _text(length=3), nullable=False),
        sa.Column("direction", _text(length=10), nullable=False),
        sa.Column("reference", _text(length=200), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("state", _text(length=12), nullable=False),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.Column("ack_jti", _text(length=100), nullable=True),
        sa.Column("outstanding", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("acknowledged_at", _ts, nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_settlement_statement_positive")),
        sa.CheckConstraint("role IN ('sent', 'received')",
                           name=op.f("ck_settlement_statement_role")),
        sa.CheckConstraint("state IN ('sent', 'acknowledged')",
                           name=op.f("ck_settlement_statement_state")),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_settlement_statement_org_id_organization"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_statement")),
        sa.UniqueConstraint("org_id", "jti", name=op.f("uq_settlement_statement_org_id_jti")),
    )
    with op.batch_alter_table("settlement_statement", schema=None) as batch_op:
        batch_op.create_index("ix_settlement_statement_org_party", ["org_id", "counterparty"],
                              unique=False)
        batch_op.create_index("uq_settlement_statement_sent_reference",
                              ["org_id", "counterparty", "reference"], unique=True,
                              sqlite_where=sa.text("role = 'sent'"),
                              postgresql_where=sa.text("role = 'sent'"))


def downgrade() -> None:
    with op.batch_alter_table("settlement_statement", schema=None) as batch_op:
        batch_op.drop_index("uq_settlement_statement_sent_reference")
        batch_op.drop_index("ix_settlement_statement_org_party")
    op.drop_table("settlement_statement")
