"""Benchmark: what counting a request against its rate limit adds, per store (issue 14).

For each store (the database on SQLite, on PostgreSQL, and Redis), one app on a scratch
database answers N anonymous `POST /api/v1/orgs/acme/nonces` through Flask's test client
(in-process: no HTTP, so the difference is the limiter's), in rounds that alternate:

  counted   the nonces bucket limited (a quota no run reaches): one count per request
  lifted    `WALLET_RATE_LIMITS=nonces:anonymous=0`: the same request, nothing counted

The overhead is the median over rounds of (counted - lifted) per request, and the same
from the fastest round of each (less moved by other load on the machine). PostgreSQL (and
its scratch database) comes from --url, WALLET_BENCH_POSTGRES_URL or
WALLET_TEST_POSTGRES_URL; Redis from --redis (default the local one).

    .venv/bin/python bench/ratelimit.py [--requests 1000] [--rounds 5]

Prints a table, then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _goals import figure

from wallet import create_app, db, migrations
from wallet.actions import orgs
from wallet.actions._base import Actor
from wallet.config import normalise_database_url
from wallet.db import make_engine

NONCES = "/api/v1/orgs/acme/nonces"


@contextmanager
def database(kind: str, folder: Path, pg_url: str) -> Iterator[str]:
    """A migrated scratch database: an SQLite file, or a PostgreSQL database dropped after."""
    if kind == "sqlite":
        url = f"sqlite:///{folder}/bench.sqlite3"
        engine = make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        yield url
        return
    admin = sa.create_engine(normalise_database_url(pg_url), isolation_level="AUTOCOMMIT")
    name = f"wallet_bench_rl_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalise_database_url(pg_url)).set(database=name).render_as_string(
        hide_password=False)
    try:
        engine = make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(url: str, folder: Path, redis: str | None, requests: int,
            rounds: int) -> dict[str, float]:
    config: dict[str, Any] = {
        "WALLET_DATABASE_URL": url, "WALLET_INSTANCE_PATH": str(folder / "instance"),
        "WALLET_KEYSTORE": str(folder / "keys"), "WALLET_BASE_URL": "http://wallet.test",
        "WALLET_SECRET_KEY": "bench-secret-key-" + "x" * 32,
        "WALLET_KEY_PASSPHRASE": "bench-key-passphrase",
        "WALLET_PUBLIC_RATE_PER_MINUTE": 10**9,
        "WALLET_ARGON2_TIME_COST": 1, "WALLET_ARGON2_MEMORY_KIB": 1024}
    if redis:
        config.update(WALLET_REDIS_URL=redis,
                      WALLET_RATE_LIMIT_REDIS_PREFIX=f"wallet-bench:{uuid.uuid4().hex}:")
    app = create_app(config)
    with app.app_context():
        orgs.create_org(db.session(), slug="acme", name="Acme", admin_email="a@acme.test",
                        actor=Actor.cli(), admin_password="bench password 123")  # noqa: S106
    client = app.test_client()
    times: dict[str, list[float]] = {"counted": [], "lifted": []}
    try:
        for _ in range(50):  # warm up: pools, prepared statements, caches
            client.post(NONCES)
        for n in range(rounds):
            order = ("counted", "lifted") if n % 2 == 0 else ("lifted", "counted")
            for mode in order:
                app.config["WALLET_RATE_LIMITS"] = "" if mode == "counted" else \
                    "nonces:anonymous=0"
                started = time.perf_counter()
                for _ in range(requests):
                    answer = client.post(NONCES)
                    assert answer.status_code == 201, answer.get_data(as_text=True)
                times[mode].append((time.perf_counter() - started) / requests)
    finally:
        app.extensions["wallet.engine"].dispose()
    counted, lifted = statistics.median(times["counted"]), statistics.median(times["lifted"])
    overhead = statistics.median(c - f for c, f in zip(times["counted"], times["lifted"],
                                                       strict=True))
    # The fastest rounds move less when other processes share the CPUs.
    best = min(times["counted"]) - min(times["lifted"])
    return {"counted_ms": counted * 1e3, "lifted_ms": lifted * 1e3,
            "overhead_ms": overhead * 1e3, "best_overhead_ms": best * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--url", default=os.environ.get("WALLET_BENCH_POSTGRES_URL")
                        or os.environ.get("WALLET_TEST_POSTGRES_URL")
                        or "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for name, kind, redis in (("database (SQLite)", "sqlite", None),
                              ("database (PostgreSQL)", "postgresql", None),
                              ("Redis (app on PostgreSQL)", "postgresql", args.redis)):
        with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), args.url) as url:
            results[name] = measure(url, Path(tmp), redis, args.requests, args.rounds)
    print(f"{args.requests} POST /nonces per round, {args.rounds} rounds, medians"
          f" ({platform.python_implementation()} {platform.python_version()},"
          f" {os.cpu_count()} CPUs)")
    print(f"{'store':28} {'counted ms':>11} {'lifted ms':>10} {'overhead ms':>12}"
          f" {'fastest rounds':>15}")
    for name, row in results.items():
        print(f"{name:28} {row['counted_ms']:11.3f} {row['lifted_ms']:10.3f}"
              f" {row['overhead_ms']:12.3f} {row['best_overhead_ms']:15.3f}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, row in results.items():
        figure("ratelimit", f"overhead per counted request, {name}", row["overhead_ms"],
               "report", unit=" ms")
    print(json.dumps({"bench": "ratelimit", "requests": args.requests, "rounds": args.rounds,
                      "results": results, "python": platform.python_version(),
                      "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime())}))


if __name__ == "__main__":
    main()
