"""Trust between employers: which issuers an organisation honours notes from (and
accepts redeem requests from), with a policy, and the keys it pinned for each.

Adding an issuer fetches, checks and pins its metadata and keys (the request first, then
one transaction); a change to an entry that is there already is explicit (`replace`, or
`update` for the policy alone). `repin` is the network step that refreshes one entry when
a verification finds its pin stale or lacking a key (`wallet.actions.lookups`). Every
change bumps the organisation's config version in its transaction, so the next request
in any process sees it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from wallet.actions._base import Actor, atomic, commit, org_or_404, require_admin, utcnow
from wallet.actions.signing import issuer_id
from wallet.core import jose
from wallet.core.errors import Conflict, Malformed, NotFound, WalletError
from wallet.core.money import format_amount, parse_currency, parse_money
from wallet.models import Organization, TrustedIssuer
from wallet.peers import Pinned, clean, fetch_issuer
from wallet.store import federation as fed_store
from wallet.store import people

log = logging.getLogger("wallet.federation")


def normalise_issuer(issuer: str) -> str:
    """An issuer id as written by a person, checked: an http(s) URL, no trailing slash."""
    issuer = issuer.strip().rstrip("/")
    if not issuer.startswith(("https://", "http://")) or len(issuer) > 300 \
            or clean(issuer, 300) != issuer:  # no spaces or control characters either
        raise Malformed("an issuer id is an http(s) URL such as https://credits.example/orgs/acme")
    return issuer


def _currencies(values: list[str] | None) -> str:
    codes = sorted({parse_currency(v.strip().upper()) for v in (values or ["USD"]) if v.strip()})
    if not codes:
        raise Malformed("accept at least one currency")
    return ",".join(codes)


@dataclass(frozen=True, slots=True)
class Change:
    """One thing a trust change alters: `field` goes from `before` to `after`."""

    field: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.field} {self.before} -> {self.after}"

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class Trusted:
    """The outcome of trust add: `added`, `replaced` (with `changes`) or `unchanged`."""

    entry: TrustedIssuer
    outcome: str
    changes: list[Change]


@dataclass(frozen=True, slots=True)
class TrustUpdate:
    """A trust entry after an explicit policy change, and what changed (maybe nothing)."""

    entry: TrustedIssuer
    changes: list[Change]


def _cap_text(micros: int | None) -> str:
    return "none" if micros is None else format_amount(micros)


def _policy_changes(entry: TrustedIssuer, cap: int | None, currencies: str) -> list[Change]:
    changes = []
    if entry.cap != cap:
        changes.append(Change("cap", _cap_text(entry.cap), _cap_text(cap)))
    if entry.currencies != currencies:
        changes.append(Change("currencies", entry.currencies, currencies))
    return changes


def _key_changes(entry: TrustedIssuer, jwks: dict[str, Any]) -> list[Change]:
    before, after = sorted(jose.jwks_keys(entry.jwks)), sorted(jose.jwks_keys(jwks))
    if before == after:
        return []
    return [Change("keys", ", ".join(before) or "none", ", ".join(after) or "none")]


def _already_trusted(slug: str, entry: TrustedIssuer, changes: list[Change]) -> Conflict:
    listed = "; ".join(str(c) for c in changes)
    return Conflict(f"{slug} already trusts {entry.issuer}; adding it again would change"
                    f" {listed}. Replace explicitly (--replace, or confirm on the page), or"
                    " change the policy alone with 'wallet trust update'",
                    changes=[c.as_json() for c in changes])


def add(session: Session, *, slug: str, issuer: str, cap: str | None = None,
        currencies: list[str] | None = None, replace: bool = False, actor: Actor) -> Trusted:
    """Trust an issuer: fetch, check and pin its metadata and keys, with a policy.

    An issuer trusted already keeps its entry unless `replace`: a re-add that would
    change its policy or pinned keys is refused with a `Conflict` listing the changes
    (`extra["changes"]`); one that would change nothing leaves the entry as it is.
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    issuer = normalise_issuer(issuer)
    if issuer == issuer_id(org):
        raise Malformed("an organisation trusts its own notes already")
    cap_micros = parse_money(cap, "USD").micros if cap else None
    accepted = _currencies(currencies)
    commit(session)  # hold no transaction while fetching
    pinned = fetch_issuer(issuer)
    now = utcnow()
    with atomic(session):
        entry = fed_store.entry(session, org_id=org.id, issuer=issuer)
        action, details = "trust.add", {"cap": cap, "currencies": accepted,
                                        "keys": sorted(jose.jwks_keys(pinned.jwks))}
        changes: list[Change] = []
        if entry is None:
            entry = TrustedIssuer(org_id=org.id, issuer=issuer)
        else:
            changes = (_policy_changes(entry, cap_micros, accepted)
                       + _key_changes(entry, pinned.jwks))
            if not changes:
                return Trusted(entry, "unchanged", [])  # the same policy and keys
            if not replace:
                raise _already_trusted(slug, entry, changes)
            action, details = "trust.replace", {"changes": [c.as_json() for c in changes]}
        entry.name = clean(pinned.metadata.get("name"), 200)
        entry.issuer_metadata, entry.jwks = pinned.metadata, pinned.jwks
        entry.cap, entry.currencies = cap_micros, accepted
        entry.pinned_at = entry.refreshed_at = now
        session.add(entry)
        session.flush()
        people.bump_config(session, org_id=org.id)
        people.audit(session, org_id=org.id, actor=actor.label, action=action,
                     target=issuer, details=details)
    return Trusted(entry, "replaced" if changes else "added", changes)


def update(session: Session, *, slug: str, issuer: str, cap: str | None = None,
           no_cap: bool = False, currencies: list[str] | None = None,
           actor: Actor) -> TrustUpdate:
    """Change a trusted issuer's policy (cap, currencies) and nothing else: no fetch."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    if cap and no_cap:
        raise Malformed("give a cap or no cap, not both")
    if not cap and not no_cap and not currencies:
        raise Malformed("nothing to change: give a cap, no cap, or currencies")
    cap_micros = parse_money(cap, "USD").micros if cap else None
    accepted = _currencies(currencies) if currencies else None
    with atomic(session):
        entry = fed_store.entry(session, org_id=org.id, issuer=normalise_issuer(issuer))
        if entry is None:
            raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
        changes = _policy_changes(
            entry, cap_micros if cap or no_cap else entry.cap, accepted or entry.currencies)
        if changes:
            if cap or no_cap:
                entry.cap = cap_micros
            entry.currencies = accepted or entry.currencies
            session.add(entry)
            people.bump_config(session, org_id=org.id)
            people.audit(session, org_id=org.id, actor=actor.label, action="trust.update",
                         target=entry.issuer,
                         details={"changes": [c.as_json() for c in changes]})
    return TrustUpdate(entry, changes)


def entry_of(session: Session, *, slug: str, issuer: str) -> TrustedIssuer:
    """An organisation's trust entry for one issuer, or `NotFound`."""
    org = org_or_404(session, slug)
    assert org.id is not None
    entry = fed_store.entry(session, org_id=org.id, issuer=normalise_issuer(issuer))
    if entry is None:
        raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
    return entry


def remove(session: Session, *, slug: str, issuer: str, actor: Actor) -> None:
    """Stop trusting an issuer (notes already honoured stay honoured)."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    with atomic(session):
        entry = fed_store.entry(session, org_id=org.id, issuer=normalise_issuer(issuer))
        if entry is None:
            raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
        session.delete(entry)
        people.bump_config(session, org_id=org.id)
        people.audit(session, org_id=org.id, actor=actor.label, action="trust.remove",
                     target=entry.issuer)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a refresh changed for one issuer."""

    issuer: str
    added: list[str]
    removed: list[str]
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "added": self.added, "removed": self.removed,
                "error": self.error}


def refresh(session: Session, *, slug: str, actor: Actor,
            issuer: str | None = None) -> list[Refreshed]:
    """Re-fetch pinned metadata and keys (scheduled, or after an unknown kid)."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    targets = [e.issuer for e in fed_store.entries(session, org_id=org.id)
               if issuer is None or e.issuer == normalise_issuer(issuer)]
    if issuer is not None and not targets:
        raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
    commit(session)  # hold no transaction while fetching
    out: list[Refreshed] = []
    for target in targets:
        try:
            pinned = fetch_issuer(target)
        except WalletError as err:
            out.append(Refreshed(target, [], [], clean(err.message, 300)))
            continue
        with atomic(session):
            entry = fed_store.entry(session, org_id=org.id, issuer=target)
            if entry is None:
                continue
            added, removed = _pin(session, org, entry, pinned, actor=actor.label, rename=True)
        out.append(Refreshed(target, added, removed))
    return out


def repin(session: Session, *, org: Organization, issuer: str) -> bool:
    """Re-fetch and re-pin a trusted issuer whose pin is stale or lacks a key a token
    names: the request first, then one transaction. False (logged) when the fetch
    failed or the entry is gone; the caller holds no transaction."""
    assert org.id is not None
    try:
        pinned = fetch_issuer(issuer)
    except WalletError as err:
        log.warning("refreshing %s failed: %s", issuer, err.message)
        return False
    with atomic(session):
        entry = fed_store.entry(session, org_id=org.id, issuer=issuer)
        if entry is None:  # removed from the trust list meanwhile
            return False
        _pin(session, org, entry, pinned, actor="system", rename=False)
    return True


def _pin(session: Session, org: Organization, entry: TrustedIssuer, pinned: Pinned, *,
         actor: str, rename: bool) -> tuple[list[str], list[str]]:
    """Pin freshly fetched metadata and keys on an entry; audit a change of keys."""
    assert org.id is not None
    before, after = set(jose.jwks_keys(entry.jwks)), set(jose.jwks_keys(pinned.jwks))
    entry.issuer_metadata, entry.jwks, entry.refreshed_at = (
        pinned.metadata, pinned.jwks, utcnow())
    if rename:
        entry.name = clean(pinned.metadata.get("name"), 200) or entry.name
    session.add(entry)
    people.bump_config(session, org_id=org.id)
    added, removed = sorted(after - before), sorted(before - after)
    if added or removed:
        people.audit(session, org_id=org.id, actor=actor, action="trust.refresh",
                     target=entry.issuer, details={"added": added, "removed": removed})
    return added, removed


def listing(session: Session, *, slug: str) -> list[TrustedIssuer]:
    """An organisation's trust list."""
    org = org_or_404(session, slug)
    assert org.id is not None
    return fed_store.entries(session, org_id=org.id)


def names(session: Session, *, org: Organization) -> dict[str, str]:
    """What `org` calls the issuers it trusts (the name on each trust entry), by issuer
    id: pages show an employer's name, not its URL, wherever one is known."""
    assert org.id is not None
    return {e.issuer: e.name for e in fed_store.entries(session, org_id=org.id) if e.name}
