"""Sign-in delays: free at first, then doubling, capped; never a lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wallet.core.throttle import Failures, Policy, delay, wait_seconds

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
POLICY = Policy(free=3, max_delay=900, address_free=10, address_max_delay=60)


@pytest.mark.parametrize(("failures", "expected"), [
    (0, 0), (1, 0), (2, 0), (3, 2), (4, 4), (5, 8), (10, 256), (11, 512), (12, 900),
    (13, 900), (10**9, 900)])
def test_delay_doubles_after_the_free_attempts_up_to_the_cap(failures: int,
                                                              expected: int) -> None:
    assert delay(failures, free=3, cap=900) == expected


def test_the_wait_counts_from_the_latest_failure() -> None:
    latest = NOW - timedelta(seconds=3)
    f = Failures(pair=5, pair_latest=latest, address=5, address_latest=latest)
    assert wait_seconds(f, policy=POLICY, now=NOW) == 5  # 8 s after the latest
    assert wait_seconds(f, policy=POLICY, now=NOW + timedelta(seconds=5)) == 0
    assert wait_seconds(f, policy=POLICY, now=NOW + timedelta(seconds=4.2)) == 1  # rounds up


def test_the_longer_of_the_two_waits_applies() -> None:
    address_heavy = Failures(pair=0, pair_latest=None, address=40, address_latest=NOW)
    assert wait_seconds(address_heavy, policy=POLICY, now=NOW) == 60  # the address cap
    pair_heavy = Failures(pair=12, pair_latest=NOW, address=12, address_latest=NOW)
    assert wait_seconds(pair_heavy, policy=POLICY, now=NOW) == 900


def test_nothing_recorded_means_no_wait() -> None:
    assert wait_seconds(Failures(0, None, 0, None), policy=POLICY, now=NOW) == 0
