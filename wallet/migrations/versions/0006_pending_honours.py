"""pending honours: a honour waiting for an issuer that could not be reached

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:00:00

Existing data: none to convert (a honour that failed before this answered
issuer_unavailable and left nothing behind).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wallet.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = wallet.models.UTCDateTime(timezone=True)
_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "pending_honour",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", _text(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("issuer", _text(length=300), nullable=False),
        sa.Column("note_jti", _text(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", _text(length=3), nullable=False),
        sa.Column("presentation", sa.Text(), nullable=False),
        sa.Column("consumer", _text(length=250), nullable=False),
        sa.Column("state", _text(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _ts, nullable=False),
        sa.Column("note_expires_at", _ts, nullable=False),
        sa.Column("last_error", _text(length=300), nullable=False),
        sa.Column("error_code", _text(length=40), nullable=True),
        sa.Column("error_message", _text(length=300), nullable=True),
        sa.Column("honoured_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("closed_at", _ts, nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_pending_honour_positive")),
        sa.CheckConstraint("state IN ('pending', 'honoured', 'refused', 'expired')",
                           name=op.f("ck_pending_honour_state")),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_pending_honour_org_id_organization"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"],
                                name=op.f("fk_pending_honour_person_id_person"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["honoured_id"], ["honoured_note.id"],
                                name=op.f("fk_pending_honour_honoured_id_honoured_note"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_honour")),
        sa.UniqueConstraint("public_id", name=op.f("uq_pending_honour_public_id")),
    )
    with op.batch_alter_table("pending_honour", schema=None) as batch_op:
        batch_op.create_index("ix_pending_honour_state_due", ["state", "next_attempt_at"],
                              unique=False)
        batch_op.create_index("ix_pending_honour_org_person", ["org_id", "person_id"],
                              unique=False)
        batch_op.create_index("uq_pending_honour_open_note", ["org_id", "issuer", "note_jti"],
                              unique=True, sqlite_where=sa.text("state = 'pending'"),
                              postgresql_where=sa.text("state = 'pending'"))


def downgrade() -> None:
    with op.batch_alter_table("pending_honour", schema=None) as batch_op:
        batch_op.drop_index("uq_pending_honour_open_note")
        batch_op.drop_index("ix_pending_honour_org_person")
        batch_op.drop_index("ix_pending_honour_state_due")
    op.drop_table("pending_honour")
