"""Sign-in throttling: how long a client must wait before its next password attempt.

Delays, never locks. Failures are counted per (account, client address): the first few
are free, then each further attempt waits twice as long as the one before, up to a cap.
A stranger guessing at another address slows down only themselves; the real user at
their own address is not affected. A looser count per address (any account) slows down
credential stuffing from one address, with a short cap, so that an office behind one
NAT address waits seconds, never a quarter of an hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Policy:
    """Free failures and the longest delay, per (account, address) and per address."""

    free: int = 5
    max_delay: int = 900
    address_free: int = 50
    address_max_delay: int = 60


@dataclass(frozen=True, slots=True)
class Failures:
    """Failed attempts in the window: per (account, address), per address, the latest."""

    pair: int
    pair_latest: datetime | None
    address: int
    address_latest: datetime | None


def delay(failures: int, *, free: int, cap: int) -> int:
    """Seconds to wait after the latest of `failures`: 0 while free, then 2, 4, 8… ≤ cap."""
    if failures < free:
        return 0
    exponent = min(failures - free + 1, 62)  # no huge integers for absurd counts
    return min(cap, 1 << exponent)


def wait_seconds(failures: Failures, *, policy: Policy, now: datetime) -> int:
    """Whole seconds until the next attempt may be checked (0: now)."""
    waits = [0.0]
    for count, latest, free, cap in (
            (failures.pair, failures.pair_latest, policy.free, policy.max_delay),
            (failures.address, failures.address_latest, policy.address_free,
             policy.address_max_delay)):
        if latest is not None:
            due = delay(count, free=free, cap=cap) - (now - latest).total_seconds()
            waits.append(due)
    return max(0, math.ceil(max(waits)))
