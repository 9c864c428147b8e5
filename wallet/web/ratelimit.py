"""A small fixed-window rate limiter for the public endpoints (verify, nonces).

It counts per client address and per process: with N worker processes the effective
limit is N times the setting. That bounds abuse of unauthenticated endpoints without a
shared store; put a proxy limit in front for a hard global figure (docs/operations.md).
"""

from __future__ import annotations

import threading
import time

from flask import current_app

from wallet.core.errors import RateLimited


class FixedWindow:
    """Count events per key in one-minute windows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window = 0
        self._counts: dict[str, int] = {}

    def hit(self, key: str, limit: int, now: float | None = None) -> None:
        """Count one event; raise `RateLimited` past `limit` per minute."""
        window = int((now if now is not None else time.monotonic()) // 60)
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
        if count > limit:
            raise RateLimited("too many requests from this address; try again in a minute")


def limit(bucket: str, address: str) -> None:
    """Apply the public-endpoint limit to one request (not to in-process calls between
    organisations of this instance, which are not anonymous traffic)."""
    from flask import request

    if request.environ.get("wallet.local_call"):
        return
    limiter = current_app.extensions.setdefault("wallet.ratelimit", FixedWindow())
    limiter.hit(f"{bucket}:{address}", int(current_app.config["WALLET_PUBLIC_RATE_PER_MINUTE"]))
