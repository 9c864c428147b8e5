"""Which addresses a peer URL may reach: scheme, plain http, and public addresses only.

Names are resolved here, within the caller's deadline, and cached briefly; the HTTP
transport connects to exactly the addresses that were checked, so a name that resolves to
a public address for the check and to a private one for the connection (DNS rebinding)
reaches nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from wallet.core.errors import IssuerUnavailable, MalformedToken
from wallet.peers.base import origin, shown

Lookup = Callable[[str, int], list[str]]


@dataclass(frozen=True, slots=True)
class Policy:
    """What peers may be: plain http, and non-public addresses (both off in production)."""

    allow_http: bool
    allow_private: bool


def default_port(parts: SplitResult) -> int:
    """The port a URL names, or its scheme's."""
    return parts.port or (443 if parts.scheme == "https" else 80)


def check_url(url: str, policy: Policy) -> SplitResult:
    """Refuse URLs that are not http(s), or plain http when the policy says so."""
    try:
        parts = urlsplit(url)
        port = default_port(parts)
    except ValueError:  # a port out of range, a bad IPv6 literal
        raise MalformedToken(f"{shown(url, 100)!r} is not an http(s) URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username \
            or parts.password is not None or not 0 < port < 65536:
        raise MalformedToken(f"{shown(url, 100)!r} is not an http(s) URL")
    if parts.scheme == "http" and not policy.allow_http:
        raise MalformedToken("peers must use https (WALLET_FEDERATION_ALLOW_HTTP is off)")
    return parts


def check_addresses(host: str, addresses: list[str], policy: Policy) -> None:
    """Refuse a host whose addresses are not all public, unless the policy allows it."""
    if policy.allow_private:
        return
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise MalformedToken(f"{shown(host, 100)} is not a public address; peers must be"
                                 " (WALLET_FEDERATION_ALLOW_PRIVATE is off)")


def _system_lookup(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Resolver:
    """Host names to addresses: cached for `TTL` seconds, each lookup bounded in time.

    A lookup runs on a daemon thread so that the caller can give up at its deadline (the
    system resolver has no timeout of its own to pass); a peer's slow name server then
    costs a request its deadline, never more.
    """

    TTL = 30.0

    def __init__(self, lookup: Lookup = _system_lookup,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup, self._clock = lookup, clock
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # how many times the system resolver was asked (tests, metrics)

    def addresses(self, host: str, port: int, *, timeout: float) -> list[str]:
        """The addresses of `host` (an IP literal is its own), or `IssuerUnavailable`."""
        literal = _literal(host)
        if literal is not None:
            return [literal]
        key = (host.lower(), port)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now < hit[0]:
            return hit[1]
        found = self._bounded(host, port, timeout)
        with self._lock:
            if len(self._cache) > 1024:  # names come from trust lists: this is generous
                self._cache.clear()
            self._cache[key] = (self._clock() + self.TTL, found)
        return found

    def _bounded(self, host: str, port: int, timeout: float) -> list[str]:
        done = threading.Event()
        box: list[list[str] | BaseException] = []

        def run() -> None:
            try:
                box.append(self._lookup(host, port))
            except BaseException as err:  # handed to the caller below
                box.append(err)
            done.set()

        self.lookups += 1
        threading.Thread(target=run, name="peer-dns", daemon=True).start()
        if not done.wait(max(timeout, 0.0)) or isinstance(box[0], BaseException) \
                or not box[0]:
            raise IssuerUnavailable(f"{shown(host, 100)} could not be resolved")
        return box[0]


@functools.lru_cache(maxsize=1024)
def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_peer_url(url: str, policy: Policy, resolver: Resolver, *,
                   timeout: float) -> list[str]:
    """Check a peer URL against the policy; return the addresses it may be reached at."""
    parts = check_url(url, policy)
    host = parts.hostname or ""
    if policy.allow_private and _literal(host) is None:
        return []  # nothing to check: resolved when connecting (and cached there)
    found = resolver.addresses(host, default_port(parts), timeout=timeout)
    check_addresses(host, found, policy)
    return found


__all__ = ["Policy", "Resolver", "check_addresses", "check_peer_url", "check_url",
           "default_port", "origin"]
