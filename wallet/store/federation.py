"""Trust list entries, redemptions (issuer side) and honoured notes (verifier side)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wallet.models import HonouredNote, Redemption, TrustedIssuer
from wallet.store._dialect import dialect_of, run

_ENTRY = select(TrustedIssuer).where(TrustedIssuer.org_id == sa.bindparam("org_id"),
                                     TrustedIssuer.issuer == sa.bindparam("issuer"))
_HONOURED = select(HonouredNote.id).where(HonouredNote.org_id == sa.bindparam("org_id"),
                                          HonouredNote.issuer == sa.bindparam("issuer"),
                                          HonouredNote.note_jti == sa.bindparam("jti"))
_REDEMPTION_INSERT = sa.insert(Redemption.__table__)  # type: ignore[arg-type]


def entry(session: Session, *, org_id: int, issuer: str) -> TrustedIssuer | None:
    """An organisation's trust entry for an issuer id."""
    return session.exec(_ENTRY, params={"org_id": org_id, "issuer": issuer}).first()


def entries(session: Session, *, org_id: int) -> list[TrustedIssuer]:
    """Every trust entry of an organisation."""
    return list(session.exec(select(TrustedIssuer).where(TrustedIssuer.org_id == org_id)
                             .order_by(TrustedIssuer.issuer)))


def redemption_of(session: Session, *, note_id: int) -> Redemption | None:
    """The redemption of one of our notes, if any."""
    return session.exec(select(Redemption).where(Redemption.note_id == note_id)).first()


def redemptions(session: Session, *, org_id: int) -> list[Redemption]:
    """Every redemption of our notes, newest first."""
    return list(session.exec(select(Redemption).where(Redemption.org_id == org_id)
                             .order_by(col(Redemption.id).desc())))


def was_honoured(session: Session, *, org_id: int, issuer: str, jti: str) -> bool:
    """Tell whether we honoured a note from `issuer` already."""
    found = run(session, _HONOURED, {"org_id": org_id, "issuer": issuer, "jti": jti})
    return found.first() is not None


def add_redemption(session: Session, values: dict[str, Any]) -> None:
    """Record a redemption of one of our notes (its unique note id makes it once only)."""
    run(session, _REDEMPTION_INSERT, values)


def add_honoured(session: Session, values: dict[str, Any]) -> int | None:
    """Record a note from another issuer honoured here; None when it was already (the
    unique (org, issuer, note) decides between concurrent requests)."""
    return dialect_of(session).insert_ignore(
        session, HonouredNote.__table__, values,  # type: ignore[arg-type]
        ("org_id", "issuer", "note_jti"))


def honoured_all(session: Session, *, org_id: int,
                 person_id: int | None = None) -> list[HonouredNote]:
    """Notes we honoured (optionally for one person), newest first."""
    stmt = select(HonouredNote).where(HonouredNote.org_id == org_id)
    if person_id is not None:
        stmt = stmt.where(HonouredNote.person_id == person_id)
    return list(session.exec(stmt.order_by(col(HonouredNote.id).desc())))
