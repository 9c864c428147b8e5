"""Rate limits per endpoint bucket, counted across every process and instance.

Anonymous requests are counted per client address (per /64 for IPv6); authenticated
ones (a bearer token, or a signed-in session) per person, or per token for a service
token, so an office behind one address never spends its engineers' allowance and a
person's allowance does not grow with their tokens. A request whose credentials fail is
counted as anonymous traffic from its address. Quotas are per minute and configurable per
bucket (docs/operations.md, "Rate limits"); the count lives in the database or in Redis
(`wallet.actions.ratelimit`).

Each limited response carries `RateLimit-Policy` and `RateLimit`
(draft-ietf-httpapi-ratelimit-headers-11); a refused one also `Retry-After`.
In-process calls between organisations of this instance are not limited.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, request
from flask.wrappers import Response

from wallet.actions import ratelimit as counts
from wallet.config import ConfigError
from wallet.core import ratelimit as core
from wallet.core.errors import WalletError
from wallet.models import Person
from wallet.web import guard

PUBLIC = "WALLET_PUBLIC_RATE_PER_MINUTE"
AUTHENTICATED = "WALLET_AUTHENTICATED_RATE_PER_MINUTE"
WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Bucket:
    """An endpoint's limit: the settings of its quotas (None: that kind never reaches it)
    and what happens when the store cannot count (`fail_open`: the request goes on)."""

    anonymous: str | None
    authenticated: str | None
    fail_open: bool


# Fail open where refusing would hurt more than an uncounted minute: verifying and issuing
# nonces only read (and a nonce is a MAC, no row), and a peer's redeem is signed by an
# organisation we trust. Fail closed where each request buys real work for an attacker:
# a reissue signs a new note, a wallet file brought in costs a passphrase derivation
# (0.1 s of CPU, and a guess at the passphrase).
BUCKETS: dict[str, Bucket] = {
    "verify": Bucket(PUBLIC, AUTHENTICATED, fail_open=True),
    "nonces": Bucket(PUBLIC, AUTHENTICATED, fail_open=True),
    "redeem": Bucket(PUBLIC, None, fail_open=True),  # a peer's server: per its address
    "reissue": Bucket(PUBLIC, None, fail_open=False),  # the proof is the note: per address
    "bring": Bucket(None, "WALLET_BRING_PER_MINUTE", fail_open=False),  # per person
}


def init_app(app: Flask) -> None:
    """Check the quotas (a bad `WALLET_RATE_LIMITS` stops the start), choose the store,
    and add the header fields to every limited response."""
    _policies(app.config)
    counts.init_app(app)
    app.after_request(_add_headers)


Policies = dict[tuple[str, str], core.Policy]
_SETTINGS = (PUBLIC, AUTHENTICATED, "WALLET_BRING_PER_MINUTE", "WALLET_RATE_LIMITS")


def _policies(config: Mapping[str, Any]) -> Policies:
    """The policy of each (bucket, kind) under the settings as they are now (a test may
    change them on a running app); worked out once per set of values."""
    return _policies_for(tuple((name, str(config.get(name, ""))) for name in _SETTINGS))


@functools.lru_cache(maxsize=16)
def _policies_for(settings: tuple[tuple[str, str], ...]) -> Policies:
    values = dict(settings)
    try:
        defaults = {(name, kind): int(values[setting])
                    for name, bucket in BUCKETS.items()
                    for kind, setting in (("anonymous", bucket.anonymous),
                                          ("authenticated", bucket.authenticated))
                    if setting is not None}
        overrides = core.parse_overrides(values["WALLET_RATE_LIMITS"], defaults)
        return core.policies(defaults, overrides, WINDOW_SECONDS)
    except ValueError as err:
        raise ConfigError(f"rate limits (WALLET_RATE_LIMITS, WALLET_*_PER_MINUTE): {err}"
                          " (see docs/operations.md)") from None


def limit(bucket: str, caller: guard.Principal | Person | None = None) -> None:
    """Count this request in `bucket`, per `caller` (None: per client address); raise
    `RateLimited` past the quota, `RateLimitUnavailable` when the store failed and the
    bucket fails closed."""
    if request.environ.get("wallet.local_call"):
        return
    kind, partition = _partition(caller)
    policies = _policies(current_app.config)
    policy = policies.get((bucket, kind)) or policies[(bucket, _other(kind))]
    found = counts.count(policy, f"{bucket}:{partition}", fail_open=BUCKETS[bucket].fail_open)
    g.rate_limit = found
    where = " from this address" if kind == "anonymous" else ""
    found.check(f"Too many requests{where} this minute; try again in {found.resets_in} s.")


def limit_caller(bucket: str,
                 authenticate: Callable[[], guard.Principal | None]) -> guard.Principal | None:
    """Authenticate an optional caller, then count the request in `bucket`: per person or
    token when that succeeds, per address when anonymous or when it fails (a bad token
    buys no allowance of its own; past the address's quota it is answered 429)."""
    try:
        principal = authenticate()
    except WalletError:
        limit(bucket)
        raise
    limit(bucket, principal)
    return principal


def _partition(caller: guard.Principal | Person | None) -> tuple[str, str]:
    person = caller.person if isinstance(caller, guard.Principal) else caller
    if person is not None:
        return "authenticated", f"p:{person.id}"
    if isinstance(caller, guard.Principal) and caller.token is not None:
        return "authenticated", f"t:{caller.token.id}"  # a service token
    return "anonymous", f"a:{_network(guard.client_address())}"


@functools.lru_cache(maxsize=4096)
def _network(address: str) -> str:
    """The partition of a client address: itself for IPv4, its /64 for IPv6 (one
    subscriber's usual allocation: counting each of its 2**64 addresses apart would give
    one client an unbounded allowance)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test client, a misconfigured proxy): as it is
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)  # an IPv4 client seen through an IPv6 socket
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def _other(kind: str) -> str:
    return "anonymous" if kind == "authenticated" else "authenticated"


def _add_headers(response: Response) -> Response:
    found: core.Verdict | None = g.get("rate_limit")
    if found is not None:
        for name, value in found.headers().items():
            response.headers[name] = value
    return response
