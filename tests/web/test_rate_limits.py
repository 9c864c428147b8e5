"""Rate limits shared by every process and instance (issue 14), on both stores.

Every test runs with the counts in the database (SQLite and PostgreSQL) and in Redis
(`WALLET_TEST_REDIS_URL`, default the local one; in CI an unreachable Redis fails the run).
Time is a `FakeClock` standing 23 s into a minute, so every window ends in 37 s and
nothing sleeps. Regressions: the limiter counted per process (N workers: N times the
limit) and counted an engineer's nonce requests as anonymous traffic from their office's
address (64 nonces from one address were refused with 429).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import http_sf
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import notes_support as ns
from tests import support
from tests.support import World
from wallet import clock, create_app
from wallet.config import ConfigError

NONCES = "/api/v1/orgs/acme/nonces"
VERIFY = "/api/v1/orgs/acme/verify"
REISSUE = "/api/v1/orgs/acme/notes/reissue"
OFFICE = "192.0.2.10"
ANONYMOUS, AUTHENTICATED = 5, 70
REDIS_ENV = "WALLET_TEST_REDIS_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _redis_url() -> str:
    url = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        if IN_CI:
            pytest.fail(f"Redis is unreachable at {url}: {err}")
        pytest.skip(f"Redis is unreachable at {url} (set {REDIS_ENV})")
    return url


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Where the counts live: settings for the app (Redis: a prefix of this test's own)."""
    if request.param == "database":
        yield {}
        return
    import redis

    url, prefix = _redis_url(), f"wallet-test:{uuid.uuid4().hex}:"
    yield {"WALLET_REDIS_URL": url, "WALLET_RATE_LIMIT_REDIS_PREFIX": prefix}
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def app_config(app_config: dict[str, Any], store: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, **store, "WALLET_PUBLIC_RATE_PER_MINUTE": ANONYMOUS,
            "WALLET_AUTHENTICATED_RATE_PER_MINUTE": AUTHENTICATED}


START = datetime.now(UTC).replace(second=23, microsecond=0)


@pytest.fixture
def fake(app: Flask) -> clock.FakeClock:
    found = clock.install(app, clock.FakeClock(START))
    assert isinstance(found, clock.FakeClock)
    return found


def _client(app: Flask, address: str = OFFICE) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _fields(response: Any) -> dict[str, Any]:
    """The RateLimit fields, parsed by an independent structured-field parser."""
    found: dict[str, Any] = {}
    for name in ("RateLimit-Policy", "RateLimit"):
        value = response.headers.get(name)
        if value is not None:
            [(policy, params)] = http_sf.parse(value.encode(), tltype="list")
            assert type(policy) is str  # a String (draft -11 §3, §4.1), not a Token
            found[name] = (policy, params)
    return found


def _service_token(app: Flask) -> str:
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        value, _row = orgs.create_token(db.session(), slug="acme", email=None,
                                        actor=Actor.cli())
    return value


# -- counting --------------------------------------------------------------------------------


def test_two_instances_over_one_store_count_together(
        app: Flask, app_config: dict[str, Any], world: World, fake: clock.FakeClock) -> None:
    with ns.other_app(app_config) as second:
        clock.install(second, fake)
        first_client, second_client = _client(app), _client(second)
        for n in range(ANONYMOUS):
            answer = (first_client if n % 2 else second_client).post(NONCES)
            assert answer.status_code == 201, answer.get_json()
        assert first_client.post(NONCES).status_code == 429
        assert second_client.post(NONCES).status_code == 429


def test_an_engineers_nonces_are_counted_per_person_not_per_office_address(
        app: Flask, world: World, fake: clock.FakeClock) -> None:
    anonymous = _client(app)
    for _ in range(ANONYMOUS):
        assert anonymous.post(NONCES).status_code == 201
    assert anonymous.post(NONCES).status_code == 429  # the office address is spent
    ada = fs.api_token(app, "acme", world.ada)
    engineer = _client(app)
    for _ in range(64):
        answer = engineer.post(NONCES, headers=_bearer(ada))
        assert answer.status_code == 201 and answer.get_json()["bound"] is True
    assert _fields(answer)["RateLimit"] == ("nonces-authenticated", {"r": 6, "t": 37})
    # Another engineer at the same address has an allowance of their own.
    bob = fs.api_token(app, "acme", world.bob)
    assert engineer.post(NONCES, headers=_bearer(bob)).status_code == 201
    # A person's allowance does not grow with their tokens.
    second = fs.api_token(app, "acme", world.ada)
    for _ in range(AUTHENTICATED - 64):
        assert engineer.post(NONCES, headers=_bearer(second)).status_code == 201
    refused = engineer.post(NONCES, headers=_bearer(ada))
    assert refused.status_code == 429 and refused.get_json()["code"] == "rate_limited"
    assert _fields(refused)["RateLimit-Policy"] == (
        "nonces-authenticated", {"q": AUTHENTICATED, "w": 60})
    # A signed-in session (with its CSRF header) counts for its person too: bob's.
    browser = _client(app)
    support.login(browser, world.bob)
    csrf = support.csrf_token(browser, "/orgs/acme/bring")
    answer = browser.post(NONCES, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 201 and answer.get_json()["bound"] is True
    assert _fields(answer)["RateLimit"][1]["r"] == AUTHENTICATED - 2
    # A service token is counted per token (its nonces are not bound to anyone).
    service = _service_token(app)
    answer = engineer.post(NONCES, headers=_bearer(service))
    assert answer.status_code == 201 and answer.get_json()["bound"] is False
    assert _fields(answer)["RateLimit"][1]["r"] == AUTHENTICATED - 1


def test_a_failed_authentication_counts_as_anonymous_traffic(
        app: Flask, world: World, fake: clock.FakeClock) -> None:
    client = _client(app)
    bad = client.post(NONCES, headers=_bearer("not-a-token"))
    assert bad.status_code == 401 and _fields(bad)["RateLimit"][0] == "nonces-anonymous"
    for _ in range(ANONYMOUS - 1):
        assert client.post(NONCES).status_code == 201
    # Past the address's quota, made-up tokens buy nothing: 429, not another 401.
    assert client.post(NONCES, headers=_bearer("another-made-up-one")).status_code == 429
    assert client.post(NONCES).status_code == 429


def test_buckets_are_per_endpoint_and_per_address(app: Flask, world: World,
                                                  fake: clock.FakeClock) -> None:
    client = _client(app)
    for _ in range(ANONYMOUS):
        client.post(NONCES)
    assert client.post(NONCES).status_code == 429
    answer = client.post(VERIFY, json={"note": "not a note"})
    assert answer.status_code == 200
    assert _fields(answer)["RateLimit"] == ("verify-anonymous", {"r": ANONYMOUS - 1, "t": 37})
    assert _client(app, "198.51.100.7").post(NONCES).status_code == 201


def test_ipv6_clients_are_counted_per_64(app: Flask, world: World,
                                        fake: clock.FakeClock) -> None:
    """One subscriber's /64 is one client: its 2**64 addresses share one allowance."""
    for n in range(ANONYMOUS):
        assert _client(app, f"2001:db8:1:2::{n + 1:x}").post(NONCES).status_code == 201
    assert _client(app, "2001:db8:1:2:ffff::9").post(NONCES).status_code == 429
    assert _client(app, "2001:db8:1:3::1").post(NONCES).status_code == 201  # another /64
    # An IPv4 client seen through an IPv6 socket is that IPv4 address.
    assert _client(app, "192.0.2.99").post(NONCES).status_code == 201
    assert _fields(_client(app, "::ffff:192.0.2.99").post(NONCES))["RateLimit"][1]["r"] == (
        ANONYMOUS - 2)


# -- the answers -----------------------------------------------------------------------------


def test_limited_answers_carry_the_ietf_fields_and_a_429_retry_after(
        app: Flask, world: World, fake: clock.FakeClock) -> None:
    client = _client(app)
    first = client.post(NONCES)
    assert first.headers["RateLimit-Policy"] == f'"nonces-anonymous";q={ANONYMOUS};w=60'
    assert first.headers["RateLimit"] == f'"nonces-anonymous";r={ANONYMOUS - 1};t=37'
    assert "Retry-After" not in first.headers
    for _ in range(ANONYMOUS - 1):
        client.post(NONCES)
    refused = client.post(NONCES)
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    body = refused.get_json()
    assert body["code"] == "rate_limited" and body["retry_after"] == 37
    assert refused.headers["Retry-After"] == "37"  # the moment `t` names (draft -11 §6)
    assert _fields(refused) == {
        "RateLimit-Policy": ("nonces-anonymous", {"q": ANONYMOUS, "w": 60}),
        "RateLimit": ("nonces-anonymous", {"r": 0, "t": 37})}
    # Endpoints without a limit say nothing about one.
    assert "RateLimit" not in client.get("/healthz").headers


def test_a_new_window_starts_when_the_old_one_ends(app: Flask, world: World,
                                                   fake: clock.FakeClock) -> None:
    client = _client(app)
    for _ in range(ANONYMOUS):
        client.post(NONCES)
    fake.advance(36)
    late = client.post(NONCES)
    assert late.status_code == 429 and late.headers["Retry-After"] == "1"
    fake.advance(1)
    fresh = client.post(NONCES)
    assert fresh.status_code == 201
    assert _fields(fresh)["RateLimit"] == ("nonces-anonymous", {"r": ANONYMOUS - 1, "t": 60})


def test_exactly_the_quota_passes_when_32_requests_race_across_two_instances(
        app: Flask, app_config: dict[str, Any], world: World, fake: clock.FakeClock) -> None:
    """The increment is atomic: 32 concurrent requests under a quota of 10, 16 through
    each of two instances, let exactly 10 through."""
    app.config["WALLET_PUBLIC_RATE_PER_MINUTE"] = 10
    with ns.other_app({**app_config, "WALLET_PUBLIC_RATE_PER_MINUTE": 10}) as second:
        clock.install(second, fake)
        barrier = threading.Barrier(32)
        statuses: list[int] = []
        lock = threading.Lock()

        def one(target: Flask) -> None:
            client = _client(target)
            barrier.wait()
            status = client.post(NONCES).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=one, args=(app if n % 2 else second,))
                   for n in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert sorted(statuses) == [201] * 10 + [429] * 22


# -- settings --------------------------------------------------------------------------------


def test_one_buckets_quota_can_be_changed_or_lifted(app_config: dict[str, Any],
                                                    world: World) -> None:
    config = {**app_config, "WALLET_RATE_LIMITS": "nonces:anonymous=2, verify:anonymous=0"}
    with ns.other_app(config) as app:
        clock.install(app, clock.FakeClock(START))
        client = _client(app)
        assert [client.post(NONCES).status_code for _ in range(3)] == [201, 201, 429]
        for _ in range(ANONYMOUS + 1):
            answer = client.post(VERIFY, json={"note": "x"})
            assert answer.status_code == 200 and "RateLimit-Policy" not in answer.headers
        # A setting of 0 lifts its limit in every bucket that takes it.
        app.config["WALLET_PUBLIC_RATE_PER_MINUTE"] = 0
        app.config["WALLET_RATE_LIMITS"] = ""
        assert all(client.post(NONCES).status_code == 201 for _ in range(ANONYMOUS + 1))


@pytest.mark.parametrize("value", ["nonces=5", "nonces:anonymous=-1", "bring:anonymous=3",
                                   "reissue:authenticated=3", "everything:anonymous=3"])
def test_a_bad_override_stops_the_start(app_config: dict[str, Any], value: str) -> None:
    with pytest.raises(ConfigError, match="WALLET_RATE_LIMITS"):
        create_app({**app_config, "WALLET_RATE_LIMITS": value})


# -- the store failing -----------------------------------------------------------------------


def _break(app: Flask, store: dict[str, Any]) -> Any:
    """Make the store fail (Redis: a port nobody listens on; the database: its table
    gone); return a function that mends it."""
    from wallet.actions import ratelimit

    if store:
        real = app.extensions[ratelimit.EXTENSION]
        app.extensions[ratelimit.EXTENSION] = ratelimit.RedisCounter(
            "redis://127.0.0.1:1/0", store["WALLET_RATE_LIMIT_REDIS_PREFIX"])
        return lambda: app.extensions.__setitem__(ratelimit.EXTENSION, real)
    engine = app.extensions["wallet.engine"]

    def rename(old: str, new: str) -> None:
        with engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))

    rename("rate_limit_window", "rate_limit_window_away")
    return lambda: rename("rate_limit_window_away", "rate_limit_window")


def test_when_the_store_fails_reads_fail_open_and_costly_work_fails_closed(
        app: Flask, world: World, fake: clock.FakeClock, store: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    client = _client(app)
    assert client.post(NONCES).status_code == 201
    mend = _break(app, store)
    caplog.set_level(logging.WARNING, "wallet.ratelimit")
    # nonces and verify fail open: answered, uncounted (the policy, no current limit).
    for _ in range(ANONYMOUS + 1):
        answer = client.post(NONCES)
        assert answer.status_code == 201
        assert "RateLimit-Policy" in answer.headers and "RateLimit" not in answer.headers
    assert client.post(VERIFY, json={"note": "x"}).status_code == 200
    # reissue fails closed: 503, come back in a moment; never a 500.
    refused = client.post(REISSUE, json={"presentation": "x"})
    assert refused.status_code == 503 and refused.get_json()["code"] == "rate_limit_unavailable"
    assert refused.headers["Retry-After"] == "2"
    # Logged once: for the back-off, the store is not asked again.
    assert sum("not counted" in r.getMessage() for r in caplog.records) == 1
    # Mended: the store is left alone for the back-off, then counts again.
    mend()
    assert "RateLimit" not in client.post(NONCES).headers
    fake.advance(2)
    answer = client.post(NONCES)
    assert _fields(answer)["RateLimit"] == ("nonces-anonymous", {"r": ANONYMOUS - 2, "t": 35})


def test_bringing_a_wallet_in_fails_closed_when_the_store_fails(
        app: Flask, world: World, fake: clock.FakeClock, store: dict[str, Any]) -> None:
    from tests.web import test_bring_limits as bring

    ada = bring._signed_in(app, world.ada, OFFICE)
    _break(app, store)
    answer = bring._upload(ada, bring._wallet())
    assert answer.status_code == 503
    assert "could not be counted" in answer.get_data(as_text=True)
    assert answer.headers["Retry-After"] == "2"


# -- purging ---------------------------------------------------------------------------------


def test_ended_windows_are_purged(app: Flask, world: World, fake: clock.FakeClock,
                                  store: dict[str, Any]) -> None:
    for n in range(3):
        _client(app, f"192.0.2.{n + 1}").post(NONCES)
    if store:
        from wallet.actions import ratelimit

        redis = app.extensions[ratelimit.EXTENSION].client()
        keys = list(redis.scan_iter(f"{store['WALLET_RATE_LIMIT_REDIS_PREFIX']}*"))
        assert len(keys) == 3 and all(0 < redis.ttl(k) <= 38 for k in keys)
        return  # Redis forgets them itself

    def rows() -> int:
        with app.extensions["wallet.engine"].connect() as connection:
            return int(connection.execute(sa.text(
                "SELECT count(*) FROM rate_limit_window")).scalar_one())

    assert rows() == 3
    fake.advance(59)  # the windows ended, but the last purge ran less than a minute ago
    _client(app).post(NONCES)
    assert rows() == 4
    fake.advance(1)
    _client(app).post(NONCES)
    assert rows() == 1  # only the current window of the office address
