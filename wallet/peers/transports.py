"""Which transport reaches a URL: in-process for this instance, else HTTP(S), per app."""

from __future__ import annotations

from flask import current_app

from wallet.peers import addresses
from wallet.peers.base import Transport
from wallet.peers.guard import Limits
from wallet.peers.http import HttpTransport
from wallet.peers.local import LocalTransport

HTTP_KEY = "wallet.http_transport"
OVERRIDE_KEY = "wallet.transport"  # tests inject faults here: a callable url -> Transport


def policy() -> addresses.Policy:
    """This app's rules for peer addresses."""
    config = current_app.config
    return addresses.Policy(allow_http=bool(config["WALLET_FEDERATION_ALLOW_HTTP"]),
                            allow_private=bool(config["WALLET_FEDERATION_ALLOW_PRIVATE"]))


def http_transport() -> HttpTransport:
    """This app's HTTP transport: its pools, resolver cache, caps and breakers (one per app,
    in `app.extensions`, so each test app starts clean)."""
    found = current_app.extensions.get(HTTP_KEY)
    if found is None:
        config = current_app.config
        made = HttpTransport(
            timeout=float(config["WALLET_FEDERATION_TIMEOUT"]),
            max_bytes=int(config["WALLET_FEDERATION_MAX_BYTES"]),
            limits=Limits(max_concurrent=max(1, int(config["WALLET_PEER_MAX_CONCURRENT"])),
                          failures=max(0, int(config["WALLET_PEER_BREAKER_FAILURES"])),
                          cooldown=float(config["WALLET_PEER_BREAKER_COOLDOWN_SECONDS"])),
            policy=policy())
        found = current_app.extensions.setdefault(HTTP_KEY, made)
    return found  # type: ignore[no-any-return]


def check_peer_url(url: str) -> None:
    """Refuse URLs that are not http(s), plain http, or non-public addresses, as configured.

    The names resolved for the check are the addresses the HTTP transport connects to
    (cached for `Resolver.TTL`), so the check holds against DNS rebinding too.
    """
    transport = http_transport()
    addresses.check_peer_url(url, policy(), transport.resolver, timeout=transport.timeout)


def transport_for(url: str) -> Transport:
    """Pick the transport for a URL: in-process for this instance, else HTTP(S)."""
    override = current_app.extensions.get(OVERRIDE_KEY)
    if override is not None:
        return override(url)  # type: ignore[no-any-return]
    base = current_app.config["WALLET_BASE_URL"]
    if url.startswith(base + "/"):
        return LocalTransport(base)
    check_peer_url(url)
    return http_transport()
