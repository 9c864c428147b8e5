"""Talking to other issuers: transports, pinned metadata and keys, status lists.

Outbound requests go only to endpoints pinned from a *trusted* issuer's metadata (and
the status list URIs inside notes that issuer signed, which must live under its issuer
id). An issuer nobody trusted causes no request at all. Every request has a timeout and
a response size limit and never follows redirects.

Two organisations on one instance use the same code path: `LocalTransport` hands the
request to this app's WSGI callable instead of a socket; the routes and every check run
exactly as for a remote peer.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from flask import current_app
from sqlmodel import Session
from werkzeug.test import Client

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
from wallet.store import federation as trust_store
from wallet.store import keys as key_store
from wallet.store import notes as note_store
from wallet.store import people


@dataclass(frozen=True, slots=True)
class Fetched:
    """An HTTP answer."""

    status: int
    body: bytes
    content_type: str


class Transport(Protocol):
    """How requests reach an issuer."""

    def request(self, method: str, url: str, *, body: bytes | None = None,
                content_type: str | None = None) -> Fetched: ...


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could lead anywhere: treat it as an error answer


class HttpTransport:
    """Plain HTTP(S) with a timeout, a size limit, no redirects, and kept-alive connections.

    Connections to a peer are reused while they idle less than `IDLE_SECONDS` (a redeem
    per honour otherwise costs both servers a TCP handshake). A request on a reused
    connection that the peer closed meanwhile is sent once more on a new one: both the
    requests sent here are safe to repeat (GETs, and redeem, which answers a verifier's
    retry with the receipt it already issued). With a proxy configured in the
    environment (`HTTPS_PROXY`, an egress proxy) requests go through urllib instead.
    """

    IDLE_SECONDS = 1.0
    MAX_IDLE_PER_PEER = 32

    def __init__(self, *, timeout: float, max_bytes: int) -> None:
        self.timeout, self.max_bytes = timeout, max_bytes
        self._opener = urllib.request.build_opener(_NoRedirects())
        self._proxied = bool(urllib.request.getproxies())
        self._tls = ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, body: bytes | None = None,
                content_type: str | None = None) -> Fetched:
        headers = {"Accept": "application/json, application/jwt, */*",
                   "User-Agent": "compute-credit-wallet"}
        if content_type:
            headers["Content-Type"] = content_type
        if self._proxied:
            return self._via_urllib(method, url, body, headers)
        parts = urlsplit(url)
        peer = (parts.scheme, parts.hostname or "",
                parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for _attempt in (1, 2):
            conn, reused = self._take(peer)
            try:
                conn.request(method, target, body=body, headers=headers)
                answer = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused:
                    continue  # the peer closed the idle connection: once more, on a new one
                return self._unreachable(url, "the connection was closed")
            except (OSError, http.client.HTTPException, ValueError) as err:
                conn.close()
                return self._unreachable(url, err)
            data = self._read(answer.status, answer, answer.headers.get_content_type(),
                              on_error=conn.close)
            if answer.isclosed() and not answer.will_close:
                self._give(peer, conn)  # the whole answer was read: reusable
            else:
                conn.close()
            return data
        return self._unreachable(url, "the connection was closed twice")

    def _take(self, peer: tuple[str, str, int]) -> tuple[http.client.HTTPConnection, bool]:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(peer, [])
            while idle:
                since, conn = idle.pop()
                if now - since < self.IDLE_SECONDS:
                    return conn, True
                conn.close()
        scheme, host, port = peer
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=self._tls), False
        return http.client.HTTPConnection(host, port, timeout=self.timeout), False

    def close(self) -> None:
        """Close the idle connections (the process is done with this transport)."""
        with self._lock:
            idle = [conn for kept in self._idle.values() for _since, conn in kept]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _give(self, peer: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(peer, [])
            if len(idle) < self.MAX_IDLE_PER_PEER:
                idle.append((time.monotonic(), conn))
                return
        conn.close()

    def _unreachable(self, url: str, reason: object) -> Fetched:
        # The reason (refused, timed out, …) goes to the log only: shown to whoever typed
        # the URL, it would map the network behind this server.
        log.warning("request to %s failed: %s", _origin(url), reason)
        raise IssuerUnavailable(f"{_origin(url)} could not be reached")

    def _via_urllib(self, method: str, url: str, body: bytes | None,
                    headers: dict[str, str]) -> Fetched:
        # Only http(s) reaches here: check_peer_url refused every other scheme.
        req = urllib.request.Request(url, data=body, method=method,  # noqa: S310
                                     headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as answer:
                return self._read(answer.status, answer, answer.headers.get_content_type())
        except urllib.error.HTTPError as err:
            return self._read(err.code, err, err.headers.get_content_type() if err.headers else "")
        except (urllib.error.URLError, OSError, ValueError) as err:
            return self._unreachable(url, getattr(err, "reason", err))

    def _read(self, code: int, stream: Any, content_type: str,
              on_error: Any = None) -> Fetched:
        try:
            data = stream.read(self.max_bytes + 1)
        except (OSError, ValueError, http.client.HTTPException) as err:
            if on_error is not None:
                on_error()
            raise IssuerUnavailable(f"reading the answer failed: {err}") from None
        if len(data) > self.max_bytes:
            if on_error is not None:
                on_error()
            raise IssuerUnavailable(f"the answer is larger than {self.max_bytes} bytes")
        return Fetched(code, data, content_type)


LOCAL_CALL = "wallet.local_call"
"""WSGI environ key set on in-process calls between organisations of this instance (no
HTTP client can set an environ key, so it cannot be forged from outside)."""


class LocalTransport:
    """An issuer on this instance: the request goes through this app's routes in-process."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, url: str, *, body: bytes | None = None,
                content_type: str | None = None) -> Fetched:
        parts = urlsplit(url)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        # A fresh app context: the other organisation's request gets its own `g` and its
        # own database session, exactly as if it had arrived over a socket.
        with app.app_context():
            answer = Client(app).open(
                parts.path + (f"?{parts.query}" if parts.query else ""), method=method,
                data=body, content_type=content_type, base_url=self.base_url,
                environ_base={"REMOTE_ADDR": "127.0.0.1", LOCAL_CALL: True})
            try:
                return Fetched(answer.status_code, answer.get_data(), answer.mimetype)
            finally:
                answer.close()


def transport_for(url: str) -> Transport:
    """Pick the transport for a URL: in-process for this instance, else HTTP(S)."""
    override = current_app.extensions.get("wallet.transport")
    if override is not None:  # tests inject faults here
        return override(url)  # type: ignore[no-any-return]
    base = current_app.config["WALLET_BASE_URL"]
    if url.startswith(base + "/"):
        return LocalTransport(base)
    check_peer_url(url)
    http = current_app.extensions.get("wallet.http_transport")
    if http is None:  # one per app: building a urllib opener per request costs time
        http = HttpTransport(timeout=float(current_app.config["WALLET_FEDERATION_TIMEOUT"]),
                             max_bytes=int(current_app.config["WALLET_FEDERATION_MAX_BYTES"]))
        current_app.extensions["wallet.http_transport"] = http
    return http  # type: ignore[no-any-return]


def check_peer_url(url: str) -> None:
    """Refuse URLs that are not http(s), plain http, or non-public addresses, as configured.

    The address check resolves the name now; a name that later resolves elsewhere (DNS
    rebinding) is not caught here — run peers behind an egress proxy for that guarantee.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username:
        raise MalformedToken(f"{url[:100]!r} is not an http(s) URL")
    if parts.scheme == "http" and not current_app.config["WALLET_FEDERATION_ALLOW_HTTP"]:
        raise MalformedToken("peers must use https (WALLET_FEDERATION_ALLOW_HTTP is off)")
    if not current_app.config["WALLET_FEDERATION_ALLOW_PRIVATE"]:
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise IssuerUnavailable(f"{_origin(url)} could not be reached") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global or address.is_multicast:
                raise MalformedToken(f"{parts.hostname} is not a public address; peers must be"
                                     " (WALLET_FEDERATION_ALLOW_PRIVATE is off)")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def well_known_url(issuer: str) -> str:
    """SD-JWT VC issuer metadata location: /.well-known/jwt-vc-issuer inserted before the path."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}/.well-known/jwt-vc-issuer{parts.path}"


def get_json(url: str) -> dict[str, Any]:
    """GET a JSON object, or raise `IssuerUnavailable`."""
    answer = transport_for(url).request("GET", url)
    if answer.status != 200:
        raise IssuerUnavailable(f"{url} answered {answer.status}")
    try:
        return jose.json_object(answer.body)
    except MalformedToken:
        raise IssuerUnavailable(f"{url} did not answer a JSON object") from None


# -- pinning an issuer -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pinned:
    """An issuer's metadata and keys, checked for consistency."""

    issuer: str
    metadata: dict[str, Any]
    jwks: dict[str, Any]


def fetch_issuer(issuer: str) -> Pinned:
    """Fetch and check an issuer's metadata and JWKS (for trust add and refresh)."""
    check_peer_url(issuer)
    metadata = get_json(well_known_url(issuer))
    if metadata.get("issuer") != issuer:
        raise MalformedToken("the metadata's issuer differs from the issuer id asked for")
    origin = _origin(issuer)
    for member in ("jwks_uri", "redeem_endpoint", "nonce_endpoint"):
        value = metadata.get(member)
        if not isinstance(value, str) or _origin(value) != origin:
            raise MalformedToken(f"metadata {member} must be a URL on {origin}")
    jwks = get_json(metadata["jwks_uri"])
    jose.jwks_keys(jwks)  # every key must be a well-formed Ed25519 key with a true kid
    for entry in metadata.get("revoked_keys", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("compromised_at"), int):
            raise MalformedToken("metadata revoked_keys entries need kid and compromised_at")
        jose.PublicKey.from_jwk(entry.get("jwk"))
    return Pinned(issuer, metadata, jwks)


def keys_from_pinned(issuer: str, metadata: dict[str, Any],
                     jwks: dict[str, Any]) -> notes.IssuerKeys:
    """Build a verifier's view of an issuer's keys from pinned metadata and JWKS."""
    retired = {e.get("kid"): e.get("retired_at") for e in metadata.get("retired_keys", [])
               if isinstance(e, dict)}
    infos: dict[str, notes.KeyInfo] = {}
    for kid, key in jose.jwks_keys(jwks).items():
        at = retired.get(kid)
        infos[kid] = notes.KeyInfo(key, at if isinstance(at, int) else None)
    for entry in metadata.get("revoked_keys", []):
        key = jose.PublicKey.from_jwk(entry["jwk"])
        infos[key.kid] = notes.KeyInfo(key, None, int(entry["compromised_at"]))
    return notes.IssuerKeys(issuer, infos)


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
        value = self.status_list(note.issuer, note.status_uri).status(note.status_idx)
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
            raise IssuerUnavailable(f"status list {uri} answered {answer.status}")
        try:
            jws = jose.parse(answer.body.decode("ascii", "replace").strip(), typ=status.TYP)
            key = keys.for_token(jose.kid_of(jws), int(jws.payload.get("iat", 0)))
            jws.verify(key.key)
            now = int(time.time())
            listed = status.read(jws.payload, uri=uri, now=now)
        except WalletError as err:
            raise IssuerUnavailable(f"status list {uri} did not verify: {err.message}") from None
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
