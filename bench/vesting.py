"""Benchmark: a vesting run posting 10,000 tranches, and a 10,000-row grants CSV import.

Runs on PostgreSQL in a scratch database (created, migrated with
`wallet.migrations.upgrade`, dropped at the end). Goals (issue 5): the vesting run
<= 5 s, the CSV import <= 10 s. A baseline measured in the same run — a plain INSERT of
10,000 rows into a scratch table with executemany — is reported with each result as a
ratio, so numbers from different machines can be compared.

    .venv/bin/python bench/vesting.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

The URL (or WALLET_BENCH_POSTGRES_URL, else WALLET_TEST_POSTGRES_URL) names a server and
a database to connect to for CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _goals import figure

from wallet import create_app, db, migrations
from wallet.actions import grants as grant_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs
from wallet.actions._base import Actor
from wallet.core import ledger as rules
from wallet.core.vesting import add_months, make_schedule, tranches
from wallet.db import make_engine
from wallet.models import Membership, Person
from wallet.store import grants as grant_store
from wallet.store import ledger

PEOPLE = 10_000
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CLI = Actor.cli()


def baseline(engine: sa.Engine) -> float:
    """Seconds for a plain executemany INSERT of 10,000 rows into a scratch table."""
    meta = sa.MetaData()
    scratch = sa.Table("bench_baseline", meta,
                       sa.Column("id", sa.Integer, primary_key=True),
                       sa.Column("name", sa.String(100)), sa.Column("amount", sa.BigInteger),
                       sa.Column("created_at", sa.DateTime(timezone=True)))
    meta.create_all(engine)
    now = datetime.now(UTC)
    rows = [{"name": f"row-{i}", "amount": i * 1000, "created_at": now} for i in range(PEOPLE)]
    with engine.begin() as c:
        started = time.perf_counter()
        c.execute(sa.insert(scratch), rows)
        elapsed = time.perf_counter() - started
    meta.drop_all(engine)
    return elapsed


def add_people(engine: sa.Engine, org_id: int, prefix: str) -> list[tuple[int, str]]:
    """Insert 10,000 people and memberships in bulk; return (id, email)."""
    now = datetime.now(UTC)
    emails = [f"{prefix}{i:05d}@bench.test" for i in range(PEOPLE)]
    person, membership = Person.__table__, Membership.__table__
    with engine.begin() as c:
        c.execute(sa.insert(person), [{"email": e, "name": "", "created_at": now}
                                      for e in emails])
        ids = dict(c.execute(sa.select(person.c.email, person.c.id)
                             .where(person.c.email.like(f"{prefix}%"))).all())
        c.execute(sa.insert(membership), [
            {"org_id": org_id, "person_id": ids[e], "role": "engineer",
             "started_on": date(2020, 1, 1), "created_at": now} for e in emails])
    return [(ids[e], e) for e in emails]


def build_vesting_data(app: object, org_id: int, people: list[tuple[int, str]],
                       today: date) -> None:
    """10,000 monthly grants whose first tranche is due today, built in bulk."""
    from flask import Flask

    assert isinstance(app, Flask)
    start = add_months(today, -1)
    schedule = make_schedule(start=start, every="month", months=48)
    parts = tranches(48_000_000_000, schedule)  # 48,000.00 over 48 months
    now = datetime.now(UTC)
    with app.app_context():
        s = db.session()
        grant_ids = grant_store.insert_grants(s, rows=[{
            "org_id": org_id, "person_id": pid, "amount": 48_000_000_000, "currency": "USD",
            "start_on": start, "cliff_months": 0, "every": "month", "months": 48,
            "source": "bench", "request_key": None, "created_by": "bench", "created_at": now}
            for pid, _e in people])
        grant_store.insert_tranche_rows(s, rows=[
            grant_store.tranche_row(org_id=org_id, grant_id=gid, person_id=pid, part=part)
            for gid, (pid, _e) in zip(grant_ids, people, strict=True) for part in parts])
        postings = [rules.Posting(rules.POOL, rules.unvested(pid), 48_000_000_000, "USD",
                                  "grant", f"grant:{gid}", ref=f"grant:{gid}")
                    for gid, (pid, _e) in zip(grant_ids, people, strict=True)]
        grant_store.ensure_accounts(s, org_id=org_id, currency="USD",
                                    names=[rules.POOL, *(p.destination for p in postings)])
        ledger.post_batch(s, org_id=org_id, postings=postings)
        s.commit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("WALLET_BENCH_POSTGRES_URL")
                        or os.environ.get("WALLET_TEST_POSTGRES_URL") or DEFAULT_URL)
    url = parser.parse_args().url
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"wallet_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    bench_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(bench_url)
        migrations.upgrade(engine)
        base = baseline(engine)
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app({
                "WALLET_DATABASE_URL": bench_url, "WALLET_INSTANCE_PATH": tmp,
                "WALLET_KEYSTORE": f"{tmp}/keys", "WALLET_SECRET_KEY": "bench-" + "x" * 40,
                "WALLET_KEY_PASSPHRASE": "bench-passphrase", "WALLET_ENV": "testing"})
            with app.app_context():
                s = db.session()
                org, _ = orgs.create_org(s, slug="bench", name="Bench", actor=CLI,
                                         admin_email="admin@bench.test",
                                         admin_password="bench-password-1")  # noqa: S106
                assert org.id is not None
                ledger_actions.fund(s, slug="bench", amount="999999999999.00", actor=CLI,
                                    idempotency_key="bench")
                today = date.today()
            people = add_people(engine, org.id, "vest")
            build_vesting_data(app, org.id, people, today)

            with app.app_context():
                started = time.perf_counter()
                run = grant_actions.vest(db.session(), slug="bench", actor=CLI)
                vest_s = time.perf_counter() - started
            assert run.count == PEOPLE, run

            importees = add_people(engine, org.id, "csv")
            text = "email,amount,start,cliff_months,every,months\n" + "".join(
                f"{e},48000.00,{today.isoformat()},12,month,48\n" for _pid, e in importees)
            with app.app_context():
                started = time.perf_counter()
                result = grant_actions.import_grants(db.session(), slug="bench",
                                                     data=text.encode(), actor=CLI,
                                                     filename="bench.csv")
                import_s = time.perf_counter() - started
            assert result.created and result.count == PEOPLE
            with app.app_context():
                problems = ledger_actions.check(db.session(), slug="bench")["bench"]
            assert not problems, problems
            app.extensions["wallet.engine"].dispose()
        engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    print(f"PostgreSQL {make_url(url).host}; baseline: executemany INSERT of {PEOPLE:,} rows"
          f" = {base:.3f} s")
    print(f"vesting run, {PEOPLE:,} tranches posted: {vest_s:.2f} s"
          f" ({vest_s / base:.1f}x baseline; goal <= 5 s: {'ok' if vest_s <= 5 else 'MISSED'})")
    print(f"CSV import, {PEOPLE:,} grants (37 tranches each, 370,000 rows):"
          f" {import_s:.2f} s ({import_s / base:.1f}x baseline;"
          f" goal <= 10 s: {'ok' if import_s <= 10 else 'MISSED'})")
    figure("vesting", f"vesting run, {PEOPLE:,} tranches", vest_s, "<=", 5, unit=" s", digits=2)
    figure("vesting", f"CSV import, {PEOPLE:,} grants", import_s, "<=", 10, unit=" s", digits=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
