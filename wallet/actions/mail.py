"""Email through SMTP (WALLET_SMTP_URL): issue 15, being built."""

from __future__ import annotations

from sqlmodel import Session


def send_due(session: Session) -> int:
    """Send the messages waiting in the outbox; how many were tried."""
    del session
    return 0
