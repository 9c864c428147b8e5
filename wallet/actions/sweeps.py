"""The periodic sweeps the background worker runs (wallet/jobs.py), each over every
organisation and each driven by rows: what is due is re-read every time and claimed
once by the action that does it, so a sweep run twice, or by two workers at once, does
what one run does."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session

from wallet import clock
from wallet.actions import grants, holds, trust
from wallet.actions._base import Actor, atomic
from wallet.core.errors import WalletError
from wallet.store import federation as fed_store
from wallet.store import people

log = logging.getLogger(__name__)


def vest_due(session: Session, *, actor: Actor) -> int:
    """Post every tranche due today in every organisation (`wallet vest --all-orgs`);
    return how many. Each tranche is claimed once (`grants.vest`)."""
    return sum(run.count for run in grants.vest_all(session, actor=actor))


def refresh_stale(session: Session, *, max_age: timedelta, actor: Actor) -> int:
    """Re-fetch every pin older than `max_age`; return how many were refreshed. A fetch
    that fails leaves its pin stale (and logged) for the next sweep."""
    stale_before = clock.now() - max_age
    due = [(org.slug, entry.issuer) for org in people.orgs(session)
           for entry in fed_store.entries(session, org_id=_id(org.id))
           if entry.refreshed_at <= stale_before]
    done = 0
    for slug, issuer in due:
        try:
            results = trust.refresh(session, slug=slug, actor=actor, issuer=issuer)
        except WalletError as err:  # removed from the trust list meanwhile
            log.info("refreshing %s for %s: %s", issuer, slug, err.message)
            continue
        done += sum(1 for r in results if r.error is None)
    return done


def expire_holds(session: Session) -> int:
    """Release the holds past their expiry in every organisation (`wallet holds
    expire`), one transaction each; return how many. Each is released once."""
    released = 0
    for org in people.orgs(session):
        with atomic(session):
            released += holds.release_due(session, org=org)
    return released


def _id(value: int | None) -> int:
    assert value is not None
    return value
