"""webhooks: endpoints per organisation, the outbox of messages, and their deliveries
(Standard Webhooks; wallet/core/webhooks.py)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:40:00

Existing data: none to convert (no event was recorded before this).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wallet.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = wallet.models.UTCDateTime(timezone=True)
_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", _text(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("url", _text(length=500), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", _text(length=254), nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_webhook_endpoint_org_id_organization"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
        sa.UniqueConstraint("public_id", name=op.f("uq_webhook_endpoint_public_id")),
    )
    with op.batch_alter_table("webhook_endpoint", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_endpoint_org", ["org_id"], unique=False)

    op.create_table(
        "webhook_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("msg_id", _text(length=40), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("type", _text(length=60), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("event_key", _text(length=200), nullable=True),
        sa.Column("created_at", _ts, nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_webhook_message_org_id_organization"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_message")),
        sa.UniqueConstraint("msg_id", name=op.f("uq_webhook_message_msg_id")),
        sa.UniqueConstraint("org_id", "event_key",
                            name=op.f("uq_webhook_message_org_id_event_key")),
    )
    with op.batch_alter_table("webhook_message", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_message_org_created", ["org_id", "created_at"],
                              unique=False)

    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("state", _text(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _ts, nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", _text(length=300), nullable=False),
        sa.Column("last_attempt_at", _ts, nullable=True),
        sa.Column("closed_at", _ts, nullable=True),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')",
                           name=op.f("ck_webhook_delivery_state")),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_webhook_delivery_org_id_organization"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["message_id"], ["webhook_message.id"],
                                name=op.f("fk_webhook_delivery_message_id_webhook_message"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoint.id"],
                                name=op.f("fk_webhook_delivery_endpoint_id_webhook_endpoint"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint("message_id", "endpoint_id",
                            name=op.f("uq_webhook_delivery_message_id_endpoint_id")),
    )
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_delivery_state_due", ["state", "next_attempt_at"],
                              unique=False)
        batch_op.create_index("ix_webhook_delivery_endpoint", ["endpoint_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_delivery_endpoint")
        batch_op.drop_index("ix_webhook_delivery_state_due")
    op.drop_table("webhook_delivery")
    with op.batch_alter_table("webhook_message", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_message_org_created")
    op.drop_table("webhook_message")
    with op.batch_alter_table("webhook_endpoint", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_endpoint_org")
    op.drop_table("webhook_endpoint")
