"""The verifier's directory: pinned issuers, keys and status lists, per organisation.

Outbound requests go only to endpoints pinned from a *trusted* issuer's metadata (and
the status list URIs inside notes that issuer signed, which must live under its issuer
id). An issuer nobody trusted causes no request at all. How requests travel (a total
deadline, a size cap, no redirects, a concurrency cap and a circuit breaker per peer,
address checks) is `wallet.peers`, which has no database access; the names it defines are
re-exported here for the modules that import them from this one.

Two organisations on one instance use the same code path: `LocalTransport` hands the
request to this app's WSGI callable instead of a socket; the routes and every check run
exactly as for a remote peer.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlmodel import Session

from wallet.core import jose, notes, status
from wallet.core.errors import (
    AlreadyRedeemed,
    IssuerUnavailable,
    MalformedToken,
    Revoked,
    UnknownIssuer,
    UnknownKey,
    UnknownNote,
    UntrustedIssuer,
    WalletError,
)
from wallet.models import Organization, SigningKey, TrustedIssuer
from wallet.peers import (
    LOCAL_CALL,
    Fetched,
    HttpTransport,
    LocalTransport,
    Pinned,
    Transport,
    check_peer_url,
    fetch_issuer,
    get_json,
    keys_from_pinned,
    shown,
    transport_for,
    well_known_url,
)
from wallet.store import federation as trust_store
from wallet.store import keys as key_store
from wallet.store import notes as note_store
from wallet.store import people

__all__ = [  # re-exported from wallet.peers for the modules that import them from here
    "LOCAL_CALL", "Directory", "Fetched", "HttpTransport", "LocalTransport", "Pinned",
    "Transport", "check_peer_url", "fetch_issuer", "forget_status_cache", "get_json",
    "keys_from_pinned", "transport_for", "well_known_url",
]


# -- the verifier's directory ------------------------------------------------------------

log = logging.getLogger("wallet.federation")
_STATUS_CACHE: dict[str, tuple[float, status.StatusList]] = {}
_STATUS_LOCK = threading.Lock()


class Directory:
    """What one organisation trusts: itself and its trust list (DESIGN §7, §8)."""

    def __init__(self, session: Session, org: Organization) -> None:
        """`org` as read in this request (its config version picks the cached keys)."""
        from wallet.actions.keys import issuer_id

        self.session, self.org = session, org
        self.own_id = issuer_id(org)
        self._keys: dict[str, notes.IssuerKeys] = {}
        self._trusted: dict[str, TrustedIssuer | None] = {}
        self._own_rows: list[SigningKey] | None = None
        self._config = _config_for(session, org)

    def trusted(self, issuer: str) -> TrustedIssuer | None:
        """This organisation's trust entry for an issuer (read once per config version).

        The entry is a detached copy shared with other requests: read it, never change it
        (`refresh` reads the row afresh to change it).
        """
        assert self.org.id is not None
        if issuer not in self._trusted:
            known = self._config.trusted
            if issuer not in known:
                row = trust_store.entry(self.session, org_id=self.org.id, issuer=issuer)
                known[issuer] = None if row is None else _detached(row)
            self._trusted[issuer] = known[issuer]
        return self._trusted[issuer]

    def resolve(self, issuer: str) -> notes.IssuerKeys:
        """Keys of a trusted issuer, or `UntrustedIssuer` / `UnknownIssuer` (no request made)."""
        if issuer in self._keys:
            return self._keys[issuer]
        from wallet.actions.keys import issuer_keys

        if issuer == self.own_id:
            found: notes.IssuerKeys = issuer_keys(self.session, org=self.org,
                                                  rows=self.own_key_rows())
        else:
            entry = self.trusted(issuer)
            if entry is None:
                base = current_app.config["WALLET_BASE_URL"] + "/orgs/"
                if issuer.startswith(base) and people.org_by_slug(
                        self.session, slug=issuer[len(base):]) is None:
                    raise UnknownIssuer(f"no organisation {issuer!r} on this instance")
                raise UntrustedIssuer(f"{issuer[:200]!r} is not in {self.org.slug}'s trust list")
            age = (datetime.now(UTC) - entry.refreshed_at).total_seconds()
            if age > int(current_app.config["WALLET_TRUST_REFRESH_SECONDS"]):
                entry = self.refresh(entry) or entry
            found = _Refreshing(self, keys_from_pinned(issuer, entry.issuer_metadata,
                                                       entry.jwks))  # type: ignore[assignment]
        self._keys[issuer] = found
        return found

    def own_key_rows(self) -> list[SigningKey]:
        """This organisation's signing keys (read once per config version; detached copies
        shared with other requests: read them, never change them)."""
        if self._own_rows is None:
            assert self.org.id is not None
            if self._config.keys is None:
                self._config.keys = [_detached(r) for r in
                                     key_store.keys_of(self.session, org_id=self.org.id)]
            self._own_rows = self._config.keys
        return self._own_rows

    def refresh(self, entry: TrustedIssuer) -> TrustedIssuer | None:
        """Re-fetch and re-pin an issuer's metadata and keys; None (logged) when it fails."""
        assert self.org.id is not None
        issuer = entry.issuer
        self.session.commit()  # hold no database transaction across the network
        try:
            pinned = fetch_issuer(issuer)
        except WalletError as err:
            log.warning("refreshing %s failed: %s", issuer, err.message)
            return None
        row = trust_store.entry(self.session, org_id=self.org.id, issuer=issuer)
        if row is None:  # removed from the trust list meanwhile
            self.session.rollback()
            return None
        before = set(jose.jwks_keys(row.jwks))
        row.issuer_metadata, row.jwks = pinned.metadata, pinned.jwks
        row.refreshed_at = datetime.now(UTC)
        self.session.add(row)
        people.bump_config(self.session, org_id=self.org.id)
        after = set(jose.jwks_keys(pinned.jwks))
        if before != after:
            people.audit(self.session, org_id=self.org.id, actor="system",
                         action="trust.refresh", target=issuer,
                         details={"added": sorted(after - before),
                                  "removed": sorted(before - after)})
        self.session.commit()
        self._keys.pop(issuer, None)
        self._trusted[issuer] = row
        return row

    def check_status(self, note: notes.Note, *, redeeming: bool = False) -> None:
        """Refuse a revoked, redeemed or unknown note; fail closed when status is unknown.

        `redeeming`: the caller is about to redeem the note at its issuer, the authority
        at redemption time (DESIGN §6). A "redeemed" entry in the issuer's list is left
        to it (if we redeemed the note and lost the answer, it hands back our receipt),
        and a note honoured here before is refused when crediting, by our unique record
        of it, rather than by a read here.
        """
        if note.issuer == self.own_id:
            self._own_status(note)
            return
        assert self.org.id is not None
        if not redeeming and trust_store.was_honoured(
                self.session, org_id=self.org.id, issuer=note.issuer, jti=note.jti):
            # Our own record is fresher than the issuer's list in a verifier's cache.
            raise AlreadyRedeemed("this note was already honoured here")
        prefix = note.issuer + "/status/"
        if not note.status_uri.startswith(prefix):
            raise MalformedToken("the note's status list is not under its issuer id")
        listed = self.status_list(note.issuer, note.status_uri)
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

    def _own_status(self, note: notes.Note) -> None:
        assert self.org.id is not None
        row = note_store.note_by_jti(self.session, org_id=self.org.id, jti=note.jti)
        if row is None or row.status_idx != note.status_idx:
            raise UnknownNote("this issuer has no record of the note")
        if row.state == "redeemed":
            raise AlreadyRedeemed("the note was already redeemed")
        if row.state in ("revoked", "reclaimed"):
            raise Revoked(f"the note was {row.state}"
                          + (f": {row.revoke_reason}" if row.revoke_reason else ""))

    def status_list(self, issuer: str, uri: str) -> status.StatusList:
        """A trusted issuer's status list, cached for its ttl; fails closed."""
        with _STATUS_LOCK:
            hit = _STATUS_CACHE.get(uri)
        if hit is not None and time.monotonic() < hit[0]:
            return hit[1]
        keys = self.resolve(issuer)
        self.session.commit()  # hold no database transaction across the network
        answer = transport_for(uri).request("GET", uri)
        if answer.status != 200:
            raise IssuerUnavailable(f"status list {shown(uri)} answered {answer.status}")
        try:
            jws = jose.parse(answer.body.decode("ascii", "replace").strip(), typ=status.TYP,
                             max_bytes=status.MAX_TOKEN_BYTES)  # its own, larger limit
            iat = jws.payload.get("iat")
            if type(iat) is not int:  # the peer's word: checked before it picks a key
                raise MalformedToken("status list token has malformed times")
            key = keys.for_token(jose.kid_of(jws), iat)
            jws.verify(key.key)
            now = int(time.time())
            listed = status.read(jws.payload, uri=uri, now=now)
        except WalletError as err:
            raise IssuerUnavailable(f"status list {shown(uri)} did not verify:"
                                    f" {err.message}") from None
        with _STATUS_LOCK:
            _STATUS_CACHE[uri] = (time.monotonic() + listed.ttl, listed)
        return listed


@dataclass
class _Config:
    """An organisation's signing keys and trust entries as of one config version."""

    version: int
    keys: list[SigningKey] | None = None
    trusted: dict[str, TrustedIssuer | None] = field(default_factory=dict)


# Per engine (a process's database) and organisation: the newest version seen. Every
# change to keys or trust entries bumps `Organization.config_version` in its own
# transaction, and each request reads the organisation afresh, so a request never uses
# keys or entries older than the version it read.
_configs: weakref.WeakKeyDictionary[Any, dict[int, _Config]] = weakref.WeakKeyDictionary()
_configs_lock = threading.Lock()


def _config_for(session: Session, org: Organization) -> _Config:
    assert org.id is not None
    with _configs_lock:
        per_engine = _configs.setdefault(session.get_bind(), {})
        found = per_engine.get(org.id)
        if found is not None and found.version == org.config_version:
            return found
        fresh = _Config(org.config_version)
        if found is None or found.version < org.config_version:
            per_engine[org.id] = fresh
        return fresh  # an older reader (the organisation changed since) gets its own


def _detached(row: Any) -> Any:
    """A copy of a row that belongs to no session, safe to share between requests."""
    return type(row)(**row.model_dump())


class _Refreshing:
    """A trusted issuer's pinned keys that re-pin once when a token names an unknown kid.

    An issuer that rotated its key is picked up on first sight of the new `kid`, at most
    once a minute per issuer; the new keys come only from the issuer's own pinned origin.
    """

    MIN_INTERVAL = 60

    def __init__(self, directory: Directory, keys: notes.IssuerKeys) -> None:
        self.directory, self.keys = directory, keys

    @property
    def issuer(self) -> str:
        return self.keys.issuer

    def for_token(self, kid: str, iat: int) -> jose.PublicKey:
        try:
            return self.keys.for_token(kid, iat)
        except UnknownKey:
            entry = self.directory.trusted(self.keys.issuer)
            if entry is None or (datetime.now(UTC) - entry.refreshed_at).total_seconds() \
                    < self.MIN_INTERVAL:
                raise
            fresh = self.directory.refresh(entry)
            if fresh is None:
                raise
            self.keys = keys_from_pinned(fresh.issuer, fresh.issuer_metadata, fresh.jwks)
            return self.keys.for_token(kid, iat)


def forget_status_cache() -> None:
    """Drop cached status lists (tests; an operator after a known revocation)."""
    with _STATUS_LOCK:
        _STATUS_CACHE.clear()
