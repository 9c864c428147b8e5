"""holds: credit reserved for a model call and settled once; cached-input prices

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:00:00

Existing data: no hold exists yet; usage records get `cached_input_tokens` 0 (none was
reported before); prices keep no cached-input price (cached input costs as input).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wallet.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = wallet.models.UTCDateTime(timezone=True)
_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("price", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cached_input_per_mtok", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("usage_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False,
                                      server_default="0"))
    op.create_table(
        "hold",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", _text(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("model", _text(length=100), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", _text(length=3), nullable=False),
        sa.Column("state", _text(length=10), nullable=False),
        sa.Column("price_snapshot", sa.JSON(), nullable=True),
        sa.Column("reference", _text(length=200), nullable=False),
        sa.Column("idempotency_key", _text(length=250), nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("closed_at", _ts, nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cost", sa.BigInteger(), nullable=True),
        sa.Column("released", sa.BigInteger(), nullable=True),
        sa.Column("overrun", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_hold_positive")),
        sa.CheckConstraint("state IN ('open', 'captured', 'voided', 'expired')",
                           name=op.f("ck_hold_state")),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_hold_org_id_organization"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"],
                                name=op.f("fk_hold_person_id_person"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hold")),
        sa.UniqueConstraint("public_id", name=op.f("uq_hold_public_id")),
        sa.UniqueConstraint("org_id", "idempotency_key",
                            name=op.f("uq_hold_org_id_idempotency_key")),
    )
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.create_index("ix_hold_state_expires", ["state", "expires_at"], unique=False)
        batch_op.create_index("ix_hold_org_person_state", ["org_id", "person_id", "state"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.drop_index("ix_hold_org_person_state")
        batch_op.drop_index("ix_hold_state_expires")
    op.drop_table("hold")
    with op.batch_alter_table("usage_record", schema=None) as batch_op:
        batch_op.drop_column("cached_input_tokens")
    with op.batch_alter_table("price", schema=None) as batch_op:
        batch_op.drop_column("cached_input_per_mtok")
