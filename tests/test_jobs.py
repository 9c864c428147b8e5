"""Background jobs (wallet/jobs.py): each job is driven by rows, so running it twice, or
twice at once, leaves the state one run leaves; the queue carries jobs on SQLite and on
Redis; `wallet worker` runs them in a process of its own. On both databases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests import fed_support as fs
from tests import support
from tests.grant_helpers import add_members, real_clock, set_clock, wallet_of
from tests.support import World
from wallet import clock, db, jobs
from wallet.actions import grants as grant_actions
from wallet.actions import holds as hold_actions
from wallet.actions._base import Actor, atomic
from wallet.core.errors import IssuerUnavailable
from wallet.core.vesting import add_months
from wallet.models import Hold, Transfer, TrustedIssuer

CLI = Actor.cli()
ADA = "ada@example.test"


# -- helpers ----------------------------------------------------------------------------------


def _snapshot(app: Flask) -> dict[str, Any]:
    """What a job may change: transfers, holds, balances, pins and the audit log."""
    from wallet.models import Account, AuditEvent

    with app.app_context():
        s = db.session()
        state = {
            "transfers": s.execute(sa.select(sa.func.count()).select_from(Transfer)).scalar(),
            "balances": sorted(s.execute(sa.select(Account.org_id, Account.name,
                                                   Account.balance)).all()),
            "holds": sorted(s.execute(sa.select(Hold.id, Hold.state, Hold.released)).all()),
            "pins": sorted(s.execute(sa.select(TrustedIssuer.id, TrustedIssuer.refreshed_at))
                           .all()),
            "audit": s.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar(),
        }
        s.rollback()
        return state


def _twice(app: Flask, job: Callable[[Flask], int]) -> tuple[int, int]:
    """Run a job, then again; the second run must leave the state as the first left it."""
    first = job(app)
    after_first = _snapshot(app)
    second = job(app)
    assert _snapshot(app) == after_first
    return first, second


def _place_hold(app: Flask, ttl: int = 60, key: str = "h-1") -> str:
    with app.app_context():
        s = db.session()
        with atomic(s):
            placed = hold_actions.place(s, slug="acme", body={
                "person": ADA, "amount": "3.00", "ttl_seconds": ttl}, idempotency_key=key,
                actor=CLI)
        return placed.hold.public_id


def _hold_state(app: Flask, public_id: str) -> str:
    with app.app_context():
        s = db.session()
        state = s.execute(sa.select(Hold.state).where(Hold.public_id == public_id)).scalar_one()
        s.rollback()
        return str(state)


@pytest.fixture
def funded(app: Flask, world: World) -> World:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=ADA, amount="10.00",
                                   actor=CLI)
    return world


# -- each job: idempotent, driven by rows -----------------------------------------------------


def test_the_vesting_job_posts_due_tranches_once(app: Flask, world: World) -> None:
    start = add_months(date.today(), -6)
    set_clock(app, start)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.bob,
                                   amount="1200.00", start=start, every="month", months=12,
                                   actor=CLI)
    real_clock(app)
    first, second = _twice(app, jobs.vest_due)
    assert (first, second) == (6, 0)
    assert wallet_of(app, world.bob) == 600 * fs.MICROS


def test_the_hold_expiry_job_releases_each_expired_hold_once(app: Flask, funded: World) -> None:
    set_clock(app, date(2027, 1, 4))
    expired, fresh = _place_hold(app, ttl=60, key="old"), _place_hold(app, ttl=600, key="new")
    assert jobs.expire_holds(app) == 0  # nothing is due yet
    app.extensions[clock.EXTENSION].advance(seconds=61)
    assert _twice(app, jobs.expire_holds) == (1, 0)
    assert (_hold_state(app, expired), _hold_state(app, fresh)) == ("expired", "open")


def test_the_trust_refresh_job_fetches_only_stale_pins(app: Flask) -> None:
    fs.setup_federation(app)
    transport = fs.FaultTransport().install(app)
    assert jobs.refresh_trust(app) == 0  # pinned just now: nothing is fetched
    assert transport.calls == []
    fs.age_pins(app, "globex", seconds=2 * 3600)
    assert _twice(app, jobs.refresh_trust) == (1, 0)  # globex's pin of acme, then nothing
    metadata = f"{fs.BASE_URL}/.well-known/jwt-vc-issuer/orgs/acme"
    assert metadata in {c.url for c in transport.calls}


def _down(method: str, url: str, forward: Callable[[], Any]) -> Any:
    raise IssuerUnavailable(f"{url} could not be reached")


def test_a_failed_refresh_leaves_the_pin_stale_for_the_next_sweep(app: Flask) -> None:
    fs.setup_federation(app)
    fs.age_pins(app, "globex", seconds=2 * 3600)
    transport = fs.FaultTransport(_down).install(app)
    assert jobs.refresh_trust(app) == 0
    transport.fault = None
    assert jobs.refresh_trust(app) == 1


def test_two_workers_running_the_same_sweep_at_once_release_a_hold_once(
        app: Flask, funded: World) -> None:
    set_clock(app, date(2027, 1, 4))
    holds = [_place_hold(app, ttl=60, key=f"h-{i}") for i in range(3)]
    app.extensions[clock.EXTENSION].advance(seconds=61)
    with ThreadPoolExecutor(2) as pool:
        released = list(pool.map(lambda _i: jobs.expire_holds(app), range(2)))
    assert sum(released) == 3
    assert {_hold_state(app, h) for h in holds} == {"expired"}
    assert jobs.expire_holds(app) == 0


def test_a_vesting_run_for_many_people_is_claimed_once_by_concurrent_jobs(
        app: Flask, world: World) -> None:
    start = add_months(date.today(), -3)
    emails = add_members(app, "acme", 5)
    set_clock(app, start)
    with app.app_context():
        for email in emails:
            grant_actions.create_grant(db.session(), slug="acme", email=email,
                                       amount="300.00", start=start, every="month",
                                       months=3, actor=CLI)
    real_clock(app)
    with ThreadPoolExecutor(2) as pool:
        posted = list(pool.map(lambda _i: jobs.vest_due(app), range(2)))
    assert sum(posted) == 15
    assert jobs.vest_due(app) == 0
    assert all(wallet_of(app, e) == 300 * fs.MICROS for e in emails)


# -- the queue --------------------------------------------------------------------------------


def _drain(queue: jobs.Jobs) -> int:
    """Run what is on the queue in this process, as a worker would; how many ran."""
    ran = 0
    while (task := queue.huey.dequeue()) is not None:
        queue.huey.execute(task)
        ran += 1
    return ran


def test_a_job_put_on_the_sqlite_queue_runs_when_a_worker_takes_it(
        app: Flask, funded: World) -> None:
    queue = jobs.queue(app)
    assert queue is jobs.queue(app)  # one per app
    assert jobs.storage_of(app) == os.path.join(app.instance_path, "jobs.sqlite3")
    set_clock(app, date(2027, 1, 4))
    hold = _place_hold(app, ttl=60)
    app.extensions[clock.EXTENSION].advance(seconds=61)
    assert queue.enqueue("expire_holds") and queue.enqueue("expire_holds")  # a duplicate
    assert queue.huey.pending_count() == 2
    assert _drain(queue) == 2
    assert _hold_state(app, hold) == "expired"


def test_catch_up_enqueues_every_periodic_sweep(app: Flask) -> None:
    queue = jobs.queue(app)
    queue.catch_up()
    names = sorted(t.name for t in queue.huey.pending())
    assert names == sorted(jobs.PERIODIC)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_queue_that_cannot_be_reached_is_logged_not_raised(
        app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    app.config["WALLET_REDIS_URL"] = f"redis://127.0.0.1:{_closed_port()}/0"
    assert jobs.queue(app).enqueue("expire_holds") is False
    assert "could not enqueue expire_holds" in caplog.text


REDIS_URL = os.environ.get("WALLET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_up() -> bool:
    try:
        import redis
    except ImportError:  # the redis extra is not installed
        return False
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def on_redis(app: Flask) -> Iterator[jobs.Jobs]:
    if not _redis_up():
        if support_in_ci():
            pytest.fail(f"Redis is not reachable at {REDIS_URL}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    app.config.update(WALLET_REDIS_URL=REDIS_URL, WALLET_JOBS_QUEUE=f"t-{uuid.uuid4().hex}")
    queue = jobs.queue(app)
    try:
        yield queue
    finally:
        queue.huey.flush()


def support_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_a_job_put_on_the_redis_queue_runs_when_a_worker_takes_it(
        app: Flask, funded: World, on_redis: jobs.Jobs) -> None:
    assert jobs.storage_of(app) == "redis://127.0.0.1:6379/0"
    set_clock(app, date(2027, 1, 4))
    hold = _place_hold(app, ttl=60)
    app.extensions[clock.EXTENSION].advance(seconds=61)
    assert on_redis.enqueue("expire_holds")
    assert on_redis.huey.pending_count() == 1
    assert _drain(on_redis) == 1
    assert _hold_state(app, hold) == "expired"
    support.assert_ledger_sound(app)


# -- `wallet worker`, a process of its own --------------------------------------------------


def _worker_env(app: Flask) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    for name in ("WALLET_DATABASE_URL", "WALLET_BASE_URL", "WALLET_KEYSTORE",
                 "WALLET_SECRET_KEY", "WALLET_KEY_PASSPHRASE"):
        env[name] = str(app.config[name])
    env["WALLET_INSTANCE_PATH"] = app.instance_path
    return env


def _wallet_bin() -> str:
    return str(Path(sys.executable).with_name("wallet"))


def _until(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.2)
    return done()


def _run_worker(app: Flask, tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with (tmp_path / "worker.log").open("wb") as log:  # the child keeps its copy
        return subprocess.Popen([_wallet_bin(), "worker", *args], env=_worker_env(app),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes], tmp_path: Path) -> str:
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # Ctrl-C: finish the jobs running, then exit
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # the group this test started, by its id
            process.wait(5)
    return (tmp_path / "worker.log").read_text(errors="replace")


@pytest.mark.slow
def test_wallet_worker_runs_a_job_another_process_put_on_the_queue(
        app: Flask, funded: World, tmp_path: Path) -> None:
    hold = _place_hold(app, ttl=1)  # the real clock: the worker process has no other
    time.sleep(1.2)
    worker = _run_worker(app, tmp_path, "--no-periodic", "--workers", "1")
    try:
        time.sleep(1.0)
        assert _hold_state(app, hold) == "open"  # no sweep of its own without --periodic
        assert jobs.queue(app).enqueue("expire_holds")  # the web's side of the queue
        assert _until(lambda: _hold_state(app, hold) == "expired", 20), _stop(worker, tmp_path)
    finally:
        log = _stop(worker, tmp_path)
    assert worker.returncode == 0, log
    assert "Consumer exiting" in log and "expire_holds" in log


@pytest.mark.slow
def test_wallet_worker_sweeps_at_start(app: Flask, world: World, tmp_path: Path) -> None:
    start = add_months(date.today(), -2)
    set_clock(app, start)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.bob,
                                   amount="200.00", start=start, every="month", months=2,
                                   actor=CLI)
    real_clock(app)
    worker = _run_worker(app, tmp_path)
    try:
        assert _until(lambda: wallet_of(app, world.bob) == 200 * fs.MICROS, 20), \
            _stop(worker, tmp_path)
    finally:
        log = _stop(worker, tmp_path)
    assert worker.returncode == 0, log
