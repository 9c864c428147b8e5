"""Pending honours: a honour that waits for its issuer (docs/federation.md, "When the
issuer sleeps"), as pure rules: its states and the time between two tries."""

from __future__ import annotations

PENDING, HONOURED, REFUSED, EXPIRED = "pending", "honoured", "refused", "expired"
STATES = (PENDING, HONOURED, REFUSED, EXPIRED)
FINAL = frozenset({HONOURED, REFUSED, EXPIRED})


def next_delay(attempts: int, *, first: int, most: int) -> int:
    """Seconds to wait before the try after `attempts` tries: `first`, doubling, at most
    `most` (exponential backoff: 30 s, 1, 2, 4 … minutes up to an hour by default)."""
    if attempts < 0 or first < 1 or most < first:
        raise ValueError("attempts >= 0 and 1 <= first <= most")
    return min(most, first << min(attempts, 32))
