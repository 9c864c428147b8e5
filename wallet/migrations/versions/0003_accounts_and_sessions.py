"""accounts and sessions: invitations per membership, confirmed memberships, server-side
sessions, API token expiry, sign-in attempts counted per (account, address)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00

Existing data: memberships of people who have a password become confirmed (they could
use them before); a pending `person.invite_hash` becomes a join invitation of that
person's first membership, with its expiry; then the person's invitation columns go.
Each membership gets the person's name as this organisation's name for them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wallet.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = wallet.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("membership", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_at", _ts, nullable=True))
        batch_op.add_column(sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200),
                                      nullable=False, server_default=""))
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", _ts, nullable=True))

    op.create_table(
        "invitation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("membership_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.Column("used_at", _ts, nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.CheckConstraint("purpose IN ('join', 'reset')", name=op.f("ck_invitation_purpose")),
        sa.ForeignKeyConstraint(["membership_id"], ["membership.id"],
                                name=op.f("fk_invitation_membership_id_membership"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"],
                                name=op.f("fk_invitation_org_id_organization"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"],
                                name=op.f("fk_invitation_person_id_person"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitation")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitation_token_hash")),
    )
    with op.batch_alter_table("invitation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invitation_membership_id"), ["membership_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_invitation_person_id"), ["person_id"],
                              unique=False)

    op.create_table(
        "web_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("idle_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("last_seen_at", _ts, nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.Column("absolute_at", _ts, nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_agent", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"],
                                name=op.f("fk_web_session_person_id_person"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_web_session_key_hash")),
    )
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_session_expires_at"), ["expires_at"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_web_session_person_id"), ["person_id"],
                              unique=False)

    with op.batch_alter_table("login_attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_login_attempt_email_created")
        batch_op.create_index("ix_login_attempt_created", ["created_at"], unique=False)

    _move_data_up()

    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.drop_constraint("uq_person_invite_hash", type_="unique")
        batch_op.drop_column("invite_expires_at")
        batch_op.drop_column("invite_hash")


_person = sa.table("person", sa.column("id", sa.Integer), sa.column("name"),
                   sa.column("password_hash"),
                   sa.column("invite_hash"), sa.column("invite_expires_at", _ts))
_membership = sa.table("membership", sa.column("id", sa.Integer), sa.column("name"),
                       sa.column("org_id", sa.Integer), sa.column("person_id", sa.Integer),
                       sa.column("created_at", _ts), sa.column("confirmed_at", _ts))
_invitation = sa.table("invitation", sa.column("org_id", sa.Integer),
                       sa.column("person_id", sa.Integer),
                       sa.column("membership_id", sa.Integer), sa.column("purpose"),
                       sa.column("token_hash"), sa.column("expires_at", _ts),
                       sa.column("created_by"), sa.column("created_at", _ts))


def _move_data_up() -> None:
    connection = op.get_bind()
    connection.execute(sa.update(_membership).values(name=sa.select(_person.c.name).where(
        _person.c.id == _membership.c.person_id).scalar_subquery()))
    with_password = sa.select(_person.c.id).where(_person.c.password_hash.is_not(None))
    connection.execute(sa.update(_membership)
                       .where(_membership.c.person_id.in_(with_password))
                       .values(confirmed_at=_membership.c.created_at))
    pending = connection.execute(
        sa.select(_person.c.id, _person.c.invite_hash, _person.c.invite_expires_at)
        .where(_person.c.invite_hash.is_not(None), _person.c.password_hash.is_(None))).all()
    for person_id, invite_hash, expires_at in pending:
        first = connection.execute(
            sa.select(_membership.c.id, _membership.c.org_id, _membership.c.created_at)
            .where(_membership.c.person_id == person_id)
            .order_by(_membership.c.id).limit(1)).first()
        if first is None or expires_at is None:
            continue  # nothing it could confirm
        connection.execute(sa.insert(_invitation).values(
            org_id=first.org_id, person_id=person_id, membership_id=first.id,
            purpose="join", token_hash=invite_hash, expires_at=expires_at,
            created_by="migration 0003", created_at=first.created_at))


def downgrade() -> None:
    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invite_hash",
                                      sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column("invite_expires_at", _ts, nullable=True))
        batch_op.create_unique_constraint("uq_person_invite_hash", ["invite_hash"])
    connection = op.get_bind()
    invitation = sa.table("invitation", sa.column("id", sa.Integer),
                          sa.column("person_id", sa.Integer), sa.column("purpose"),
                          sa.column("token_hash"), sa.column("expires_at", _ts),
                          sa.column("used_at", _ts))
    latest = connection.execute(
        sa.select(invitation.c.person_id, invitation.c.token_hash, invitation.c.expires_at)
        .where(invitation.c.purpose == "join", invitation.c.used_at.is_(None))
        .order_by(invitation.c.id)).all()
    for person_id, token_hash, expires_at in latest:  # the newest per person wins
        connection.execute(sa.update(_person).where(_person.c.id == person_id,
                                                    _person.c.password_hash.is_(None))
                           .values(invite_hash=token_hash, invite_expires_at=expires_at))
    with op.batch_alter_table("login_attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_login_attempt_created")
        batch_op.create_index("ix_login_attempt_email_created", ["email", "created_at"],
                              unique=False)
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_session_person_id"))
        batch_op.drop_index(batch_op.f("ix_web_session_expires_at"))
    op.drop_table("web_session")
    with op.batch_alter_table("invitation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invitation_person_id"))
        batch_op.drop_index(batch_op.f("ix_invitation_membership_id"))
    op.drop_table("invitation")
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("membership", schema=None) as batch_op:
        batch_op.drop_column("name")
        batch_op.drop_column("confirmed_at")
