"""Signing-key rows."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wallet.models import Note, SigningKey

_KEYS_OF = (select(SigningKey).where(SigningKey.org_id == sa.bindparam("org_id"))
            .order_by(col(SigningKey.created_at).desc(), col(SigningKey.id).desc()))
_ACTIVE_KEY = select(SigningKey).where(SigningKey.org_id == sa.bindparam("org_id"),
                                       SigningKey.state == "active")


def keys_of(session: Session, *, org_id: int) -> list[SigningKey]:
    """Every key of an organisation, newest first."""
    return list(session.exec(_KEYS_OF, params={"org_id": org_id}))


def active_key(session: Session, *, org_id: int) -> SigningKey | None:
    """The organisation's one active key."""
    return session.exec(_ACTIVE_KEY, params={"org_id": org_id}).first()


def key_by_kid(session: Session, *, org_id: int, kid: str) -> SigningKey | None:
    """A key by kid."""
    return session.exec(select(SigningKey).where(SigningKey.org_id == org_id,
                                                 SigningKey.kid == kid)).first()


def kids_with_live_notes(session: Session, *, org_id: int, now: datetime) -> set[str]:
    """The kids that signed a note of this organisation that has not expired yet."""
    query = (select(Note.kid).where(Note.org_id == org_id, Note.expires_at > now)
             .distinct())
    return set(session.exec(query))
