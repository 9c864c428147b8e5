"""mail outbox: email messages waiting to be sent (one per event, by a unique key), and
how far each mail sweep has looked

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 23:45:00

Existing data: none to convert. The sweeps start looking a day back on their first run,
so tranches vested and notes redeemed in the day before the upgrade are told of too.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wallet.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = wallet.models.UTCDateTime(timezone=True)
_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "mail_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _text(length=200), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("kind", _text(length=20), nullable=False),
        sa.Column("to_addr", _text(length=254), nullable=False),
        sa.Column("to_name", _text(length=200), nullable=False),
        sa.Column("subject", _text(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", _text(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _ts, nullable=False),
        sa.Column("expires_at", _ts, nullable=True),
        sa.Column("last_error", _text(length=300), nullable=False),
        sa.Column("sent_via", _text(length=10), nullable=True),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("closed_at", _ts, nullable=True),
        sa.CheckConstraint("state IN ('queued', 'sent', 'failed', 'expired')",
                           name=op.f("ck_mail_message_state")),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_mail_message_org_id_organization"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_message")),
        sa.UniqueConstraint("key", name=op.f("uq_mail_message_key")),
    )
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.create_index("ix_mail_message_state_due", ["state", "next_attempt_at"],
                              unique=False)
    op.create_table(
        "mail_sweep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _text(length=20), nullable=False),
        sa.Column("swept_to", _ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_sweep")),
        sa.UniqueConstraint("name", name=op.f("uq_mail_sweep_name")),
    )
    # What the sweeps read every minute: tranches vested and notes redeemed since a time.
    with op.batch_alter_table("tranche", schema=None) as batch_op:
        batch_op.create_index("ix_tranche_state_settled", ["state", "settled_at"],
                              unique=False)
    with op.batch_alter_table("note", schema=None) as batch_op:
        batch_op.create_index("ix_note_state_redeemed", ["state", "redeemed_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("note", schema=None) as batch_op:
        batch_op.drop_index("ix_note_state_redeemed")
    with op.batch_alter_table("tranche", schema=None) as batch_op:
        batch_op.drop_index("ix_tranche_state_settled")
    op.drop_table("mail_sweep")
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_message_state_due")
    op.drop_table("mail_message")
