"""Webhooks (Standard Webhooks) for each organisation: issue 15, being built."""

from __future__ import annotations

from sqlmodel import Session


def deliver_due(session: Session) -> int:
    """Deliver the webhook messages whose next attempt is due; how many were tried."""
    del session
    return 0
