"""Pure parts of wallet.peers: cleaning peer strings, the guard on a fake clock, the
resolver cache."""

from __future__ import annotations

import threading

import pytest

from wallet.core.errors import IssuerUnavailable
from wallet.peers import Guard, Limits, clean, clean_code
from wallet.peers.addresses import Resolver


@pytest.mark.parametrize(("raw", "shown"), [
    ("Acme AI", "Acme AI"),
    ("\x1b[2J\x1b[31mAcme\x1b[0m", "[2J [31mAcme [0m"),
    ("Acme\r\nSet-Cookie: x", "Acme Set-Cookie: x"),
    ("evil\u202egnp.exe", "evil gnp.exe"),  # a bidirectional override
    ("tab\tand\x00nul\x7fdel\x9bcsi", "tab and nul del csi"),
    ("lone \ud800 surrogate", "lone surrogate"),
    ("  spaced   out  ", "spaced out"),
    ("Zoë Müller 株式会社", "Zoë Müller 株式会社"),
    (5, ""), (None, ""), ({"a": 1}, ""),
])
def test_clean_keeps_printable_text_only(raw: object, shown: str) -> None:
    assert clean(raw) == shown


def test_clean_bounds_the_length() -> None:
    assert clean("x" * 10_000, 200) == "x" * 200
    assert len(clean("\x1b" * 10_000 + "y", 50)) <= 50


@pytest.mark.parametrize(("raw", "code"), [
    ("already_redeemed", "already_redeemed"), ("\x1b[31mred", "malformed"),
    ("x" * 41, "malformed"), (["a"], "malformed"), ("Revoked", "malformed"), ("", "malformed"),
])
def test_clean_code(raw: object, code: str) -> None:
    assert clean_code(raw) == code


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_k_failures_and_one_probe_decides() -> None:
    clock = Clock()
    guard = Guard(Limits(max_concurrent=4, failures=3, cooldown=10), clock=clock)
    for _ in range(2):
        guard.leave(guard.enter("p"), ok=False)
    guard.leave(guard.enter("p"), ok=True)  # a success resets the count
    for _ in range(3):
        guard.leave(guard.enter("p"), ok=False)
    assert guard.state("p") == "open"
    with pytest.raises(IssuerUnavailable, match="not asked again for 10 s"):
        guard.enter("p")
    assert guard.state("q") == "closed"  # per origin
    guard.leave(guard.enter("q"), ok=True)

    clock.now = 10.0
    probe = guard.enter("p")
    assert probe.probe
    with pytest.raises(IssuerUnavailable, match="under way"):
        guard.enter("p")  # only one probe at a time
    guard.leave(probe, ok=False)
    assert guard.state("p") == "open"  # a failed probe: another full cool-down
    clock.now = 19.0
    with pytest.raises(IssuerUnavailable):
        guard.enter("p")
    clock.now = 20.0
    guard.leave(guard.enter("p"), ok=True)
    assert guard.state("p") == "closed"
    guard.leave(guard.enter("p"), ok=False)
    assert guard.state("p") == "closed"  # counting from zero again


def test_the_cap_queues_briefly_for_a_healthy_peer_and_not_for_a_slow_one() -> None:
    clock = Clock()
    guard = Guard(Limits(max_concurrent=1, failures=0, queue_wait=0.5), clock=clock)
    held = guard.enter("p")
    # Young request in flight: a second one waits for it (and gets the slot).
    released = threading.Timer(0.05, lambda: guard.leave(held, ok=True))
    released.start()
    second = guard.enter("p")
    released.join()
    # Now the one in flight is older than the wait: over the cap is refused at once.
    clock.now = 1.0
    with pytest.raises(IssuerUnavailable, match="1 requests in flight"):
        guard.enter("p")
    guard.leave(second, ok=True)
    guard.leave(guard.enter("p"), ok=True)


def test_the_resolver_caches_for_its_ttl_and_passes_literals_through() -> None:
    clock, seen = Clock(), []

    def lookup(host: str, port: int) -> list[str]:
        seen.append(host)
        return ["192.0.2.7"]

    resolver = Resolver(lookup, clock=clock)
    for _ in range(3):
        assert resolver.addresses("Peer.Example", 443, timeout=1) == ["192.0.2.7"]
    assert resolver.addresses("[2001:db8::1]", 443, timeout=1) == ["2001:db8::1"]
    assert seen == ["Peer.Example"]
    clock.now = Resolver.TTL + 1
    resolver.addresses("peer.example", 443, timeout=1)
    assert seen == ["Peer.Example", "peer.example"]


def test_a_failed_lookup_is_issuer_unavailable() -> None:
    def broken(host: str, port: int) -> list[str]:
        raise OSError("no such name")

    with pytest.raises(IssuerUnavailable, match="could not be resolved"):
        Resolver(broken).addresses("nowhere.example", 443, timeout=1)
