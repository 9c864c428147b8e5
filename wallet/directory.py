"""The verifier's directory: what one organisation trusts, as a read-only snapshot.

A `Directory` answers for one organisation, as of the `config_version` it was read at:
its own issuer id and keys, its trust entries and the keys they pinned, and what the
status lists this process holds say of a note. It never writes, commits or sends a
request. What only the network can settle is left to the action that verifies
(`wallet.actions.lookups`), as explicit steps between transactions: the directory notes
in `wanted` each trusted issuer whose pin is stale or whose pinned keys lack a kid a
token names, and `status_source` names the status list a note's status depends on.

Kept per process, per app (`wallet.memo`): an organisation's signing keys and trust
entries as of one config version (every change to either bumps the version in its own
transaction, and each request reads the organisation afresh, so no request uses keys or
entries older than the version it read), and status lists until their `ttl`.

Outbound requests go only to endpoints pinned from a *trusted* issuer's metadata and to
the status list URIs inside notes that issuer signed, which must live under its issuer
id: an issuer nobody trusted causes no request at all.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlmodel import Session

from wallet import clock
from wallet.core import issuers, jose, notes, status
from wallet.core.errors import (
    AlreadyRedeemed,
    IssuerUnavailable,
    MalformedToken,
    Revoked,
    UnknownIssuer,
    UnknownKey,
    UnknownNote,
    UntrustedIssuer,
)
from wallet.memo import Memo, memo
from wallet.models import Organization, SigningKey, TrustedIssuer
from wallet.peers import shown
from wallet.store import federation as trust_store
from wallet.store import keys as key_store
from wallet.store import notes as note_store
from wallet.store import people

REPIN_INTERVAL = 60  # an unknown kid asks for a re-pin at most once a minute per issuer


class Directory:
    """What one organisation trusts: itself and its trust list (docs/federation.md)."""

    def __init__(self, session: Session, org: Organization) -> None:
        """`org` as read in this request (its config version picks the kept snapshot)."""
        assert org.id is not None
        self.session, self.org = session, org
        self.base_url: str = current_app.config["WALLET_BASE_URL"]
        self.own_id = issuers.issuer_id(self.base_url, org.slug)
        self.wanted: set[str] = set()  # trusted issuers to re-pin (stale, or a kid unknown)
        self._config = _config_for(org)
        self._resolved: dict[str, notes.IssuerKeys] = {}

    def trusted(self, issuer: str) -> TrustedIssuer | None:
        """This organisation's trust entry for an issuer (read once per config version).

        The entry is a detached copy shared with other requests: read it, never change it.
        """
        known = self._config.trusted
        if issuer not in known:
            assert self.org.id is not None
            row = trust_store.entry(self.session, org_id=self.org.id, issuer=issuer)
            known[issuer] = None if row is None else _detached(row)
        return known[issuer]

    def resolve(self, issuer: str) -> notes.IssuerKeys:
        """Keys of a trusted issuer, or `UntrustedIssuer` / `UnknownIssuer` (no request made).

        A pin older than `WALLET_TRUST_REFRESH_SECONDS` still answers, and its issuer is
        noted in `wanted`, as is one whose keys lack a kid a token names (once a minute).
        """
        found = self._resolved.get(issuer)
        if found is None:
            found = self._resolved[issuer] = self._resolve(issuer)
        return found

    def _resolve(self, issuer: str) -> notes.IssuerKeys:
        if issuer == self.own_id:
            return self.own_keys()
        entry = self.trusted(issuer)
        if entry is None:
            slug = issuers.local_slug(self.base_url, issuer)
            if slug is not None and people.org_by_slug(self.session, slug=slug) is None:
                raise UnknownIssuer(f"no organisation {issuer!r} on this instance")
            raise UntrustedIssuer(f"{issuer[:200]!r} is not in {self.org.slug}'s trust list")
        age = (clock.now() - entry.refreshed_at).total_seconds()
        if age > int(current_app.config["WALLET_TRUST_REFRESH_SECONDS"]):
            self.wanted.add(issuer)
        pinned = self._config.pinned(entry)
        return _Pinned(pinned.issuer, pinned.keys, wanted=self.wanted,
                       may_repin=age >= REPIN_INTERVAL)

    def own_key_rows(self) -> list[SigningKey]:
        """This organisation's signing keys (read once per config version; detached copies
        shared with other requests: read them, never change them)."""
        if self._config.keys is None:
            assert self.org.id is not None
            self._config.keys = [_detached(r) for r in
                                 key_store.keys_of(self.session, org_id=self.org.id)]
        return self._config.keys

    def own_keys(self) -> notes.IssuerKeys:
        """This organisation's keys as a verifier sees them (with retirement, compromise)."""
        if self._config.own_keys is None:
            self._config.own_keys = issuers.keys_from_rows(
                self.own_id, [key_row(r) for r in self.own_key_rows()])
        return self._config.own_keys

    def status_source(self, note: notes.Note, *, redeeming: bool = False) -> str | None:
        """Apply what our own records say of a note's status; return the issuer's status
        list URI that decides the rest (None: our own note, which our records decide).

        `redeeming`: the caller is about to redeem the note at its issuer, the authority
        at redemption time (docs/protocol.md). A note honoured here before is then
        refused when crediting, by our unique record of it, rather than by a read here.
        """
        if note.issuer == self.own_id:
            self._own_status(note)
            return None
        assert self.org.id is not None
        if not redeeming and trust_store.was_honoured(
                self.session, org_id=self.org.id, issuer=note.issuer, jti=note.jti):
            # Our own record is fresher than the issuer's list in a verifier's cache.
            raise AlreadyRedeemed("this note was already honoured here")
        if not note.status_uri.startswith(note.issuer + "/status/"):
            raise MalformedToken("the note's status list is not under its issuer id")
        return note.status_uri

    def _own_status(self, note: notes.Note) -> None:
        assert self.org.id is not None
        row = note_store.note_status(self.session, org_id=self.org.id, jti=note.jti)
        if row is None or row.status_idx != note.status_idx:
            raise UnknownNote("this issuer has no record of the note")
        if row.state == "redeemed":
            raise AlreadyRedeemed("the note was already redeemed")
        if row.state in ("revoked", "reclaimed"):
            raise Revoked(f"the note was {row.state}"
                          + (f": {row.revoke_reason}" if row.revoke_reason else ""))


def check_listed(note: notes.Note, listed: status.StatusList, *,
                 redeeming: bool = False) -> None:
    """Refuse a note its issuer's status list marks revoked, suspended or redeemed.

    `redeeming`: a "redeemed" entry is left to the issuer (if we redeemed the note and
    lost the answer, it hands back our receipt).
    """
    try:
        value = listed.status(note.status_idx)
    except (IndexError, MalformedToken):  # the list is shorter than the issuer's note says
        raise IssuerUnavailable(f"status list {shown(note.status_uri)} has no entry"
                                f" {note.status_idx}") from None
    if value == status.REVOKED:
        raise Revoked("the issuer revoked this note")
    if value == status.SUSPENDED:
        raise Revoked("the issuer suspended this note")
    if value == status.REDEEMED and not redeeming:
        raise AlreadyRedeemed("the note was already redeemed")


def status_lists() -> Memo[status.StatusList]:
    """This process's status lists of other issuers, by URI, each kept for its `ttl`."""
    return memo("status-lists", maxsize=1024)


def key_row(row: SigningKey) -> issuers.KeyRow:
    """A signing key row as the plain values `wallet.core.issuers` reads."""
    return issuers.KeyRow(row.kid, row.public_jwk, epoch(row.retired_at),
                          epoch(row.compromised_at))


def epoch(moment: Any) -> int | None:
    """A stored time in Unix seconds (None stays None)."""
    return None if moment is None else int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class _Pinned(notes.IssuerKeys):
    """A trusted issuer's pinned keys that note, at an unknown kid, that a re-pin may
    find it (the new keys come only from the issuer's own pinned origin)."""

    wanted: set[str] = field(default_factory=set, compare=False)
    may_repin: bool = False

    def for_token(self, kid: str, iat: int) -> jose.PublicKey:
        try:
            return notes.IssuerKeys.for_token(self, kid, iat)
        except UnknownKey:
            if self.may_repin:
                self.wanted.add(self.issuer)
            raise


@dataclass
class _Config:
    """An organisation's signing keys and trust entries as of one config version."""

    version: int
    keys: list[SigningKey] | None = None
    own_keys: notes.IssuerKeys | None = None
    trusted: dict[str, TrustedIssuer | None] = field(default_factory=dict)
    _pinned: dict[str, notes.IssuerKeys] = field(default_factory=dict)

    def pinned(self, entry: TrustedIssuer) -> notes.IssuerKeys:
        """The keys a trust entry of this version pinned (checked when they were pinned)."""
        found = self._pinned.get(entry.issuer)
        if found is None:
            found = self._pinned[entry.issuer] = issuers.keys_from_pinned(
                entry.issuer, entry.issuer_metadata, entry.jwks)
        return found


_VERSIONS = threading.Lock()  # makes "newest version wins" one step per organisation


def _config_for(org: Organization) -> _Config:
    """The kept config of `org`'s version: the newest version seen is kept; an older
    reader (the organisation changed since it read it) gets a fresh one of its own."""
    kept = memo("directory-configs")
    with _VERSIONS:
        found: _Config | None = kept.get(org.id)
        if found is not None and found.version == org.config_version:
            return found
        fresh = _Config(org.config_version)
        if found is None or found.version < org.config_version:
            kept.put(org.id, fresh)
        return fresh


def _detached(row: Any) -> Any:
    """A copy of a row that belongs to no session, safe to share between requests."""
    return type(row)(**row.model_dump())
