"""Count requests against rate limits, in a store that every process and instance shares.

The store is the database by default: one row per bucket, partition and window
(`rate_limit_window`), counted by one upsert-increment that is a transaction of its own:
on PostgreSQL one autocommit statement beside the request's transaction; on SQLite (one
writer) on the request's session, committed at once (a limit is checked first in a
request, after authentication, so nothing else is pending yet). With `WALLET_REDIS_URL`
set it is Redis: `INCR` and `EXPIRE` in one `MULTI`/`EXEC` pipeline, the key's time to
live purging ended windows. Either way the count is atomic: of 32 concurrent requests
under a quota of 10, exactly 10 pass.

When the store fails (the database or Redis down, a timeout), the request is not
counted: the caller's bucket decides whether it goes on (fail open) or is refused with
503 `rate_limit_unavailable` (fail closed); see `wallet/web/ratelimit.py`. The store is
then left alone for `RETRY_AFTER_FAILURE_SECONDS`, so that a dead Redis costs one
timeout per process every few seconds, not one per request.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import sqlalchemy as sa
from flask import Flask, current_app

from wallet import clock, db
from wallet.actions._base import commit
from wallet.core.ratelimit import Policy, Verdict, uncounted, verdict
from wallet.memo import memo
from wallet.store import ratelimit as rows

log = logging.getLogger("wallet.ratelimit")

EXTENSION = "wallet.rate_limit_store"
RETRY_AFTER_FAILURE_SECONDS = 2
# Redis answers a local INCR pipeline in well under a millisecond; past this something is
# wrong, and the request should not wait on it.
REDIS_TIMEOUT_SECONDS = 0.25


class StoreFailed(Exception):
    """The shared store could not count a request."""


class Counter(Protocol):
    """Where counts live: the database or Redis."""

    name: str

    def hit(self, key: str, *, resets_at: int, now: int) -> int:
        """Count one request of `key` in the window ending at `resets_at`; the new count."""


class DatabaseCounter:
    """Counts in `rate_limit_window`: a transaction of its own beside the request's where
    the database allows it (PostgreSQL), else on the request's session, committed here."""

    name = "database"

    def hit(self, key: str, *, resets_at: int, now: int) -> int:
        session = db.session()
        try:
            apart = rows.hit_apart(session, key=key, resets_at=resets_at, now=now)
        except sa.exc.SQLAlchemyError as err:
            raise _failed(err) from err
        if apart is not None:
            return apart
        # The request's own work has not started: what is open here only read.
        assert not (session.new or session.dirty or session.deleted), \
            "a rate limit is checked before a request changes anything"
        try:
            count = rows.hit(session, key=key, resets_at=resets_at, now=now)
            commit(session)
        except sa.exc.SQLAlchemyError as err:
            session.rollback()
            raise _failed(err) from err
        return count


def _failed(err: sa.exc.SQLAlchemyError) -> StoreFailed:
    return StoreFailed(f"{type(err).__name__}: {getattr(err, 'orig', err)}")


class RedisCounter:
    """Counts in Redis: `<prefix><key>:<resets_at>`, expiring a second after its window."""

    name = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        import redis  # the `redis` extra; only a deployment that sets WALLET_REDIS_URL needs it
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry: a pooled connection that died with a Redis restart is
        # reopened once; a Redis that is down is not asked again and again.
        self._client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 1))
        self._prefix = prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def hit(self, key: str, *, resets_at: int, now: int) -> int:
        name = f"{self._prefix}{key}:{resets_at}"
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, resets_at - now + 1)
                count, _ = pipe.execute()
        except self._errors as err:
            raise StoreFailed(f"{type(err).__name__}: {err}") from err
        return int(count)

    def client(self) -> Any:
        """The Redis client (tests read the keys' lifetimes)."""
        return self._client


def init_app(app: Flask) -> None:
    """Choose the app's store from its settings (a missing `redis` package fails here)."""
    url = str(app.config.get("WALLET_REDIS_URL") or "")
    counter: Counter = (RedisCounter(url, str(app.config["WALLET_RATE_LIMIT_REDIS_PREFIX"]))
                        if url else DatabaseCounter())
    app.extensions[EXTENSION] = counter


def store() -> Counter:
    """The current app's store."""
    found: Counter = current_app.extensions[EXTENSION]
    return found


def count(policy: Policy, key: str, *, fail_open: bool) -> Verdict:
    """Count one request of partition `key` under `policy`, across all instances."""
    now = clock.unix()
    if not policy.limited:
        return verdict(policy, 0, now=now)  # no limit: nothing to count
    counter = store()
    failing = memo("rate-limit-store-failing")
    if failing.get(counter.name):
        return uncounted(policy, fail_open=fail_open, retry_after=RETRY_AFTER_FAILURE_SECONDS)
    try:
        hits = counter.hit(key, resets_at=policy.window_end(now), now=now)
    except StoreFailed as err:
        failing.put(counter.name, True, ttl=RETRY_AFTER_FAILURE_SECONDS)
        log.warning("rate-limit store (%s) failed, requests are not counted for %d s"
                    " (%s fails %s): %s", counter.name, RETRY_AFTER_FAILURE_SECONDS,
                    policy.name, "open" if fail_open else "closed", err)
        return uncounted(policy, fail_open=fail_open, retry_after=RETRY_AFTER_FAILURE_SECONDS)
    return verdict(policy, hits, now=now)
