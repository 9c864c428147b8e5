"""Per-peer limits: a concurrency cap and a circuit breaker, per origin and per process.

A peer that answers slowly holds a server thread per request for up to the deadline; the
cap bounds how many threads one peer can hold, so the rest keep serving everyone else.
A peer that keeps failing is not asked at all for a cool-down (its callers get
`issuer_unavailable` at once), then a single probe decides whether it is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wallet.core.errors import IssuerUnavailable
from wallet.peers.base import shown


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one peer may take of this process."""

    max_concurrent: int = 3  # requests in flight to one origin (keep it below the threads)
    failures: int = 5  # consecutive failures that open the breaker (0: never)
    cooldown: float = 30.0  # seconds the breaker stays open before one probe
    queue_wait: float = 0.25  # how long a request over the cap may wait for a slot


@dataclass(slots=True)
class _State:
    in_flight: int = 0
    waiting: int = 0
    failures: int = 0  # consecutive
    open_until: float | None = None  # the breaker is open until then (monotonic clock)
    probing: bool = False  # the one request let through after the cool-down is out
    started: list[float] = field(default_factory=list)  # when each request in flight began


@dataclass(frozen=True, slots=True)
class Slot:
    """Permission for one request to one origin; hand it back with `Guard.leave`."""

    origin: str
    probe: bool
    started: float


class Guard:
    """The cap and breaker of every origin this process talks to (thread-safe)."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self._clock = limits, clock
        self._changed = threading.Condition()
        self._peers: dict[str, _State] = {}

    def enter(self, origin: str) -> Slot:
        """A slot for one request to `origin`, or `IssuerUnavailable` at once (or after
        `queue_wait` when the peer is healthy but busy)."""
        limits = self.limits
        with self._changed:
            peer = self._peers.setdefault(origin, _State())
            probe = self._check_breaker(origin, peer)
            if not probe and peer.in_flight >= limits.max_concurrent:
                # A short queue (no longer than the cap) for bursts to a healthy peer, whose
                # answers come within the wait; none for a peer that has started failing or
                # whose requests in flight all took longer than the wait already.
                now = self._clock()
                if peer.waiting >= limits.max_concurrent or peer.failures or \
                        now - max(peer.started) > limits.queue_wait:
                    raise self._busy(origin)
                peer.waiting += 1
                try:
                    self._changed.wait_for(
                        lambda: peer.in_flight < limits.max_concurrent, limits.queue_wait)
                finally:
                    peer.waiting -= 1
                if peer.in_flight >= limits.max_concurrent:
                    raise self._busy(origin)
                probe = self._check_breaker(origin, peer)
            peer.in_flight += 1
            slot = Slot(origin, probe, self._clock())
            peer.started.append(slot.started)
            return slot

    def leave(self, slot: Slot, *, ok: bool) -> None:
        """Hand a slot back, saying whether the peer answered properly."""
        with self._changed:
            peer = self._peers[slot.origin]
            peer.in_flight -= 1
            peer.started.remove(slot.started)
            if slot.probe:
                peer.probing = False
            if ok:
                peer.failures, peer.open_until = 0, None
            else:
                peer.failures += 1
                if slot.probe or (self.limits.failures
                                  and peer.failures >= self.limits.failures):
                    peer.open_until = self._clock() + self.limits.cooldown
            self._changed.notify_all()

    def state(self, origin: str) -> str:
        """`closed`, `open` or `probing` (for tests and operators)."""
        with self._changed:
            peer = self._peers.get(origin)
            if peer is None or peer.open_until is None:
                return "closed"
            return "probing" if peer.probing or self._clock() >= peer.open_until else "open"

    def _check_breaker(self, origin: str, peer: _State) -> bool:
        """Refuse while open; after the cool-down let exactly one probe through (True)."""
        if peer.open_until is None:
            return False
        left = peer.open_until - self._clock()
        if left > 0:
            raise IssuerUnavailable(
                f"{shown(origin)} failed {peer.failures} times in a row; it is not asked"
                f" again for {max(1, round(left))} s")
        if peer.probing:
            raise IssuerUnavailable(f"{shown(origin)} has been failing; a request to see"
                                    " whether it is back is under way")
        peer.probing = True
        return True

    def _busy(self, origin: str) -> IssuerUnavailable:
        return IssuerUnavailable(
            f"{shown(origin)} already has {self.limits.max_concurrent} requests in flight"
            " from this server; try again shortly")
