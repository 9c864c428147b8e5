"""Rate limits: fixed windows, the verdict on one count, and the IETF header fields.

Pure: the time (`now`, Unix seconds) and the count (from whatever shared store the shell
uses) are arguments. A policy allows `quota` requests per `window` seconds in each
partition (a client address, a person, a token); windows are aligned to the Unix epoch, so
every process and instance agrees on where one ends without talking to the others.

The header fields follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026), §3 and §4:
structured-field Lists (RFC 9651) of one Item each, the policy named by a String:

    RateLimit-Policy: "nonces-anonymous";q=120;w=60
    RateLimit: "nonces-anonymous";r=0;t=37

A 429 also carries `Retry-After` (RFC 9110 §10.2.3) naming the same moment as `t`, as
the draft's §6 asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wallet.core.errors import RateLimited, RateLimitUnavailable

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


@dataclass(frozen=True, slots=True)
class Policy:
    """At most `quota` requests per `window` seconds in each partition (0: no limit)."""

    name: str
    quota: int
    window: int = 60

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"policy name {self.name!r}: lower-case letters, digits, - and _")
        if self.quota < 0 or self.window < 1:
            raise ValueError("a policy needs a quota >= 0 and a window >= 1 second")

    @property
    def limited(self) -> bool:
        return self.quota > 0

    def window_end(self, now: int) -> int:
        """The Unix second at which the window holding `now` ends (the next one starts)."""
        return (now // self.window + 1) * self.window

    def field(self) -> str:
        """This policy as a `RateLimit-Policy` field value."""
        return f'"{self.name}";q={self.quota};w={self.window}'


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one counted request may do under a policy.

    `count` is this request's number in its window, or None when the store could not
    count it (then `allowed` is the bucket's choice: fail open or fail closed).
    """

    policy: Policy
    count: int | None
    resets_in: int  # seconds until the window ends, at least 1
    allowed: bool

    @property
    def remaining(self) -> int | None:
        if self.count is None:
            return None
        return max(0, self.policy.quota - self.count)

    def headers(self) -> dict[str, str]:
        """The response header fields for this verdict.

        The policy always; the current limit only when it is known; `Retry-After` when
        the request was refused. An unlimited policy advertises nothing.
        """
        if not self.policy.limited:
            return {}
        fields = {"RateLimit-Policy": self.policy.field()}
        remaining = self.remaining
        if remaining is not None:
            fields["RateLimit"] = f'"{self.policy.name}";r={remaining};t={self.resets_in}'
        if not self.allowed:
            fields["Retry-After"] = str(self.resets_in)
        return fields

    def check(self, message: str) -> None:
        """Return if the request may go on; else raise `RateLimited` (over the quota) or
        `RateLimitUnavailable` (not counted, and the bucket fails closed)."""
        if self.allowed:
            return
        if self.count is None:
            raise RateLimitUnavailable("The request could not be counted against its rate"
                                       " limit; try again in a moment.",
                                       retry_after=self.resets_in)
        raise RateLimited(message, retry_after=self.resets_in)


def verdict(policy: Policy, count: int, *, now: int) -> Verdict:
    """The verdict on the `count`-th request of its window (counting this one)."""
    resets_in = max(1, policy.window_end(now) - now)
    return Verdict(policy, count, resets_in,
                   allowed=not policy.limited or count <= policy.quota)


def uncounted(policy: Policy, *, fail_open: bool, retry_after: int) -> Verdict:
    """The verdict when the store could not count the request."""
    return Verdict(policy, None, max(1, retry_after), allowed=fail_open or not policy.limited)


def parse_overrides(text: str,
                    known: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Parse `bucket:kind=N` entries, comma- or space-separated (kind: anonymous or
    authenticated; N requests per window, 0 for no limit) for the (bucket, kind) pairs
    `known`; `ValueError` names the first bad entry."""
    pairs = set(known)
    found: dict[tuple[str, str], int] = {}
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        match = re.fullmatch(r"([a-z_-]+):([a-z]+)=(\d{1,9})", entry)
        if match is None:
            raise ValueError(f"{entry!r} is not bucket:kind=N (e.g. nonces:authenticated=1200)")
        bucket, kind, quota = match.groups()
        if (bucket, kind) not in pairs:
            names = ", ".join(f"{b}:{k}" for b, k in sorted(pairs))
            raise ValueError(f"{entry!r}: no such bucket and kind (there are {names})")
        found[(bucket, kind)] = int(quota)
    return found


def policies(defaults: Mapping[tuple[str, str], int],
             overrides: Mapping[tuple[str, str], int],
             window: int = 60) -> dict[tuple[str, str], Policy]:
    """One policy per (bucket, kind): the default quota unless overridden."""
    return {(bucket, kind): Policy(f"{bucket}-{kind}", overrides.get((bucket, kind), quota),
                                   window)
            for (bucket, kind), quota in defaults.items()}
