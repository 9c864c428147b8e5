"""The pure part of the rate limits: windows, verdicts, header fields, overrides."""

from __future__ import annotations

import http_sf
import pytest

from wallet.core.errors import RateLimited, RateLimitUnavailable
from wallet.core.ratelimit import Policy, parse_overrides, policies, uncounted, verdict

POLICY = Policy("nonces-anonymous", 120)
NOW = 1_796_371_223  # 23 s into a minute


def test_windows_are_aligned_to_the_epoch() -> None:
    assert POLICY.window_end(NOW) == NOW + 37
    assert POLICY.window_end(NOW + 36) == NOW + 37
    assert POLICY.window_end(NOW + 37) == NOW + 97  # the next window
    assert Policy("daily", 5, 86_400).window_end(86_400 * 3 + 1) == 86_400 * 4


def test_the_quota_th_request_passes_and_the_next_is_refused() -> None:
    assert verdict(POLICY, 120, now=NOW).allowed
    refused = verdict(POLICY, 121, now=NOW)
    assert not refused.allowed and refused.remaining == 0 and refused.resets_in == 37
    with pytest.raises(RateLimited) as raised:
        refused.check("slow down")
    assert raised.value.extra == {"retry_after": 37} and raised.value.code == "rate_limited"
    verdict(POLICY, 1, now=NOW).check("never raised")


def test_header_fields_follow_the_draft_and_parse_as_structured_fields() -> None:
    """draft-ietf-httpapi-ratelimit-headers-11 §3.2 and §4.2 give these shapes."""
    fields = verdict(POLICY, 120, now=NOW).headers()
    assert fields == {"RateLimit-Policy": '"nonces-anonymous";q=120;w=60',
                      "RateLimit": '"nonces-anonymous";r=0;t=37'}
    assert http_sf.parse(fields["RateLimit-Policy"].encode(), tltype="list") == [
        ("nonces-anonymous", {"q": 120, "w": 60})]
    assert http_sf.parse(fields["RateLimit"].encode(), tltype="list") == [
        ("nonces-anonymous", {"r": 0, "t": 37})]
    refused = verdict(POLICY, 500, now=NOW + 36).headers()
    assert refused["Retry-After"] == "1" and refused["RateLimit"].endswith(";r=0;t=1")


def test_an_uncounted_request_follows_its_buckets_choice() -> None:
    opened = uncounted(POLICY, fail_open=True, retry_after=2)
    assert opened.allowed and opened.remaining is None
    assert opened.headers() == {"RateLimit-Policy": '"nonces-anonymous";q=120;w=60'}
    opened.check("never raised")
    closed = uncounted(POLICY, fail_open=False, retry_after=2)
    assert closed.headers()["Retry-After"] == "2" and "RateLimit" not in closed.headers()
    with pytest.raises(RateLimitUnavailable) as raised:
        closed.check("unused")
    assert raised.value.status == 503 and raised.value.code == "rate_limit_unavailable"


def test_a_zero_quota_is_no_limit_and_advertises_nothing() -> None:
    free = Policy("verify-anonymous", 0)
    assert verdict(free, 10**6, now=NOW).allowed
    assert verdict(free, 10**6, now=NOW).headers() == {}
    assert uncounted(free, fail_open=False, retry_after=2).allowed


def test_overrides_change_known_buckets_only() -> None:
    known = [("nonces", "anonymous"), ("nonces", "authenticated"), ("bring", "authenticated")]
    assert parse_overrides("", known) == {}
    assert parse_overrides(" nonces:authenticated=1200,bring:authenticated=2 ", known) == {
        ("nonces", "authenticated"): 1200, ("bring", "authenticated"): 2}
    assert parse_overrides("nonces:anonymous=0", known) == {("nonces", "anonymous"): 0}
    for bad in ("nonces=5", "nonces:anonymous=-1", "bring:anonymous=3", "x:anonymous=1",
                "nonces:anonymous=1e3"):
        with pytest.raises(ValueError):
            parse_overrides(bad, known)
    made = policies({("nonces", "anonymous"): 120, ("nonces", "authenticated"): 600},
                    {("nonces", "authenticated"): 1200})
    assert made[("nonces", "authenticated")] == Policy("nonces-authenticated", 1200)
    assert made[("nonces", "anonymous")].field() == '"nonces-anonymous";q=120;w=60'


def test_policy_names_and_numbers_are_checked() -> None:
    for name, quota, window in (("Has Space", 1, 60), ("ok", -1, 60), ("ok", 1, 0),
                                ('quo"te', 1, 60)):
        with pytest.raises(ValueError):
            Policy(name, quota, window)
