"""Settlement statements sent and received, with their acknowledgements (DESIGN §11.2).

The table is defined here rather than in `wallet/models.py` only because this module's
author owned no part of models.py when it was written; it registers on the same
metadata (migration 0007), and belongs beside `HonouredNote` once someone moves it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from wallet.models import HonouredNote, Note, Redemption, UTCDateTime
from wallet.store._dialect import dialect_of, run


def _now() -> datetime:
    return datetime.now(UTC)


class SettlementStatement(SQLModel, table=True):
    """One settlement statement, as the payer sent it (`sent`) or the payee received it
    (`received`). A payer's statement moves `sent -> acknowledged` once, by a conditional
    update, and only then posts; a payee's row is written `acknowledged` with the
    acknowledgement it answers, once per statement jti (the unique key)."""

    __tablename__ = "settlement_statement"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "jti"),
        sa.CheckConstraint("amount > 0", name="positive"),
        sa.CheckConstraint("role IN ('sent', 'received')", name="role"),
        sa.CheckConstraint("state IN ('sent', 'acknowledged')", name="state"),
        sa.Index("ix_settlement_statement_org_party", "org_id", "counterparty"),
        # A payer's bank reference settles once per counterparty: `pay` run again with it
        # sends the same statement again (a lost acknowledgement) instead of a new one.
        sa.Index("uq_settlement_statement_sent_reference", "org_id", "counterparty",
                 "reference", unique=True, sqlite_where=sa.text("role = 'sent'"),
                 postgresql_where=sa.text("role = 'sent'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id", ondelete="RESTRICT", nullable=False)
    role: str = Field(max_length=10)
    counterparty: str = Field(max_length=300)
    jti: str = Field(max_length=100)
    digest: str = Field(max_length=64)
    amount: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    direction: str = Field(default="pay", max_length=10)
    reference: str = Field(max_length=200)
    statement: str = Field(sa_type=sa.Text)
    state: str = Field(max_length=12)
    ack: str | None = Field(default=None, sa_type=sa.Text)
    ack_jti: str | None = Field(default=None, max_length=100)
    outstanding: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=_now, sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


_TABLE: sa.Table = SettlementStatement.__table__  # type: ignore[assignment]


def by_jti(session: Session, *, org_id: int, jti: str) -> SettlementStatement | None:
    """A statement this organisation sent or received, by its jti."""
    return session.exec(select(SettlementStatement).where(
        SettlementStatement.org_id == org_id, SettlementStatement.jti == jti)).first()


def sent_with_reference(session: Session, *, org_id: int, counterparty: str,
                        reference: str) -> SettlementStatement | None:
    """The statement we sent `counterparty` under a bank reference, if any."""
    return session.exec(select(SettlementStatement).where(
        SettlementStatement.org_id == org_id, SettlementStatement.role == "sent",
        SettlementStatement.counterparty == counterparty,
        SettlementStatement.reference == reference)).first()


def statements(session: Session, *, org_id: int,
               counterparty: str | None = None) -> list[SettlementStatement]:
    """Statements sent and received, oldest first."""
    stmt = select(SettlementStatement).where(SettlementStatement.org_id == org_id)
    if counterparty is not None:
        stmt = stmt.where(SettlementStatement.counterparty == counterparty)
    return list(session.exec(stmt.order_by(col(SettlementStatement.id))))


def add_sent(session: Session, values: dict[str, Any]) -> int | None:
    """Record a statement about to be sent; None when one with its reference exists
    already (a concurrent `pay` with the same reference stored its own first)."""
    statement = (dialect_of(session).insert(_TABLE)
                 .on_conflict_do_nothing(index_elements=["org_id", "counterparty", "reference"],
                                         index_where=_TABLE.c.role == "sent")
                 .returning(_TABLE.c.id))
    row = run(session, statement, {**values, "role": "sent", "state": "sent"}).first()
    return None if row is None else int(row[0])


def add_received(session: Session, values: dict[str, Any]) -> int | None:
    """Claim a received statement's jti; None when it was claimed already (the unique
    (org, jti) decides between concurrent deliveries of one statement)."""
    return dialect_of(session).insert_ignore(
        session, _TABLE, {**values, "role": "received", "state": "acknowledged"},
        ("org_id", "jti"))


def set_ack(session: Session, *, row_id: int, ack: str, ack_jti: str, outstanding: int,
            at: datetime, from_state: str | None = None) -> bool:
    """Store a statement's acknowledgement; with `from_state`, only if the row is still
    in it (the payer's `sent -> acknowledged`, once). True when a row changed."""
    stmt = (sa.update(_TABLE).where(_TABLE.c.id == row_id)
            .values(ack=ack, ack_jti=ack_jti, outstanding=outstanding, acknowledged_at=at,
                    state="acknowledged"))
    if from_state is not None:
        stmt = stmt.where(_TABLE.c.state == from_state)
    return bool(run(session, stmt).rowcount)


def forget_sent(session: Session, *, row_id: int) -> None:
    """Drop a statement the payee refused outright (it stored nothing and posted nothing),
    so that its reference may be used again."""
    run(session, sa.delete(_TABLE).where(_TABLE.c.id == row_id, _TABLE.c.role == "sent",
                                         _TABLE.c.state == "sent"))


def honoured_total(session: Session, *, org_id: int, issuer: str, currency: str,
                   since: datetime | None = None) -> int:
    """What the notes we honoured from `issuer` come to (those honoured at or after
    `since`)."""
    stmt = (select(sa.func.coalesce(sa.func.sum(HonouredNote.amount), 0))
            .where(HonouredNote.org_id == org_id, HonouredNote.issuer == issuer,
                   HonouredNote.currency == currency))
    if since is not None:
        stmt = stmt.where(HonouredNote.created_at >= since)
    return int(session.exec(stmt).one())


def honoured_of(session: Session, *, org_id: int, issuer: str,
                note_jtis: list[str]) -> dict[str, tuple[int, str]]:
    """The notes among `note_jtis` we honoured from `issuer`: jti -> (amount, currency)."""
    rows = session.exec(select(HonouredNote.note_jti, HonouredNote.amount,
                               HonouredNote.currency)
                        .where(HonouredNote.org_id == org_id, HonouredNote.issuer == issuer,
                               col(HonouredNote.note_jti).in_(note_jtis)))
    return {jti: (amount, currency) for jti, amount, currency in rows}


def receipts_with(session: Session, *, org_id: int,
                  counterparty: str) -> tuple[list[tuple[str, str, int, str]],
                                              list[tuple[str, str, int, str]]]:
    """Receipts of the pair, each (note jti, receipt jti, amount, currency): our notes
    `counterparty` redeemed, then its notes we honoured."""
    redeemed = session.exec(select(Note.jti, Redemption.receipt_jti, Redemption.amount,
                                   Redemption.currency)
                            .join(Note, col(Note.id) == col(Redemption.note_id))
                            .where(Redemption.org_id == org_id,
                                   Redemption.redeemer == counterparty)
                            .order_by(col(Redemption.id)))
    honoured = session.exec(select(HonouredNote.note_jti, HonouredNote.receipt_jti,
                                   HonouredNote.amount, HonouredNote.currency)
                            .where(HonouredNote.org_id == org_id,
                                   HonouredNote.issuer == counterparty)
                            .order_by(col(HonouredNote.id)))
    return [tuple(r) for r in redeemed], [tuple(r) for r in honoured]  # type: ignore[misc]
