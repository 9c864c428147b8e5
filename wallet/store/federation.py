"""Trust list entries, redemptions (issuer side) and honoured notes (verifier side)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from wallet.models import HonouredNote, Redemption, TrustedIssuer


def entry(session: Session, *, org_id: int, issuer: str) -> TrustedIssuer | None:
    """An organisation's trust entry for an issuer id."""
    return session.exec(select(TrustedIssuer).where(TrustedIssuer.org_id == org_id,
                                                    TrustedIssuer.issuer == issuer)).first()


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


def honoured(session: Session, *, org_id: int, issuer: str, jti: str) -> HonouredNote | None:
    """A note from `issuer` we honoured, if any."""
    return session.exec(select(HonouredNote).where(
        HonouredNote.org_id == org_id, HonouredNote.issuer == issuer,
        HonouredNote.note_jti == jti)).first()


def honoured_all(session: Session, *, org_id: int,
                 person_id: int | None = None) -> list[HonouredNote]:
    """Notes we honoured (optionally for one person), newest first."""
    stmt = select(HonouredNote).where(HonouredNote.org_id == org_id)
    if person_id is not None:
        stmt = stmt.where(HonouredNote.person_id == person_id)
    return list(session.exec(stmt.order_by(col(HonouredNote.id).desc())))
