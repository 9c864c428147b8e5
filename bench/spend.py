"""Benchmark: a gateway's hold + capture pair against a plain endpoint (issue 13).

The real app runs under `wallet serve` (gunicorn, its defaults: 2 workers of 4 threads) on
loopback, on a scratch SQLite file and/or a scratch PostgreSQL database (created,
migrated and dropped by this script). It is set up like the demo: organisation acme,
funded, one engineer per client with plenty of vested credit, and a service token (the
gateway's). Then, at 16 clients:

- **pairs**: one iteration is what the LiteLLM hook does per model call: place a hold
  for the worst case of a call (`POST /holds` with the model and max tokens), then
  capture the usage (`POST /holds/<id>/capture`). Two requests, two short transactions.
- **plain** (the baseline): `GET /api/v1/orgs/acme/holds/<id>` of a captured hold with
  the same service token. It is the cheapest authenticated JSON endpoint the gateway's
  token can call, and it runs everything a hold request runs except the writes: the
  bearer-token lookup, the organisation, the hold row, its person, the wallet's balance,
  the same JSON view, and the request's transaction (ended with a COMMIT). So the ratio
  measures what placing and capturing cost on top of reading. (`GET /healthz` would
  measure the framework only; `/me` needs a person's token, which a gateway has not.)

The two phases alternate in --rounds rounds, so a machine that speeds up or slows down
mid-run affects both sides of the ratio. Both are **closed loop**: each client sends its
next request the moment it has its answer, so the server is always saturated and the
rate measured is its capacity; the ratio compares capacities. Latencies there are mostly
queueing: with 16 clients waiting on two CPUs, a call waits for the ~15 ahead of it
(Little's law: mean latency = clients / rate), so that p99 says how long the queue is
at capacity, not how fast a call is. It is printed as the saturation figure.

Then the **paced** phases (open loop, --paced, default 50 % and 70 % of the pair rate
just measured in the same run): the same 16 clients start pairs on a fixed schedule,
`share x capacity` pairs/s in all, whatever the answers do (each client has a slot
every 16 / rate seconds, offset so the slots interleave evenly). That is how a gateway
loads the wallet: calls arrive at the rate users make them, below what the wallet can
take. A place is timed from its slot, so a client still busy with its last pair when
the slot comes counts that wait too (no coordinated omission); a capture from when it
is sent, right after its place's answer. p50 and p99 of each call at each load are the
figures the p99 goal is judged on, at the load stated.

Reported: pairs/s ÷ plain requests/s, p50 and p99 of each call (place, capture, plain)
closed loop, the same for the paced phases with the rate reached and how late slots
started, CPU time per request of the server, PostgreSQL and the clients, how busy the
CPUs were; then `wallet ledger check` and the count of captured holds against the
successful pairs.

Goals (issue 13): ratio >= 0.3 (judged on each database); p99 of place and of capture
<= 25 ms at 16 clients on PostgreSQL, judged on the paced phases at the load they state
(SQLite's p99 is printed for information). The clients are Python threads on the same
CPUs as the server, and their own scheduling adds to every latency measured.

    .venv/bin/python bench/spend.py [--db both|sqlite|postgresql]
        [--url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--clients 16]
        [--seconds 24] [--plain-seconds 12] [--rounds 3] [--workers 2] [--threads 4]
        [--paced 0.5,0.7] [--paced-seconds 20]

The URL (or WALLET_BENCH_POSTGRES_URL, else WALLET_TEST_POSTGRES_URL) names a server and
a database to connect to for CREATE DATABASE; with --db both and no server answering
there, only SQLite runs. Prints a table per database and one JSON line each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from honour import (
    Client,
    Instance,
    busy_share,
    cpu_by_group,
    cpu_per_request,
    machine_ticks,
    percentile,
    wallet_bin,
)

from wallet import create_app, db, migrations
from wallet.actions import grants, ledger, orgs
from wallet.actions._base import Actor
from wallet.config import normalise_database_url
from wallet.db import make_engine

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GOAL_RATIO, GOAL_P99_MS = 0.3, 25.0
SLUG = "acme"
API = f"/api/v1/orgs/{SLUG}"
MODEL = "gpt-4o-mini"
# What the LiteLLM hook sends for a short chat call (wallet/integrations/litellm.py).
PLACE = {"model": MODEL, "max_input_tokens": 60, "max_output_tokens": 20,
         "ttl_seconds": 300, "reference": "litellm bench"}
CAPTURE = json.dumps({"input_tokens": 31, "output_tokens": 12,
                      "cached_input_tokens": 0}).encode()


# -- setup -------------------------------------------------------------------------------


def prepare(inst: Instance, clients: int) -> tuple[str, list[str]]:
    """acme, funded; one engineer per client with vested credit; a service token."""
    engine = make_engine(inst.url)
    migrations.upgrade(engine)
    engine.dispose()
    app = create_app(inst.config())
    cli = Actor.cli()
    emails = [f"eng{i:02d}@bench.test" for i in range(clients)]
    with app.app_context():
        s = db.session()
        secret = uuid.uuid4().hex
        orgs.create_org(s, slug=SLUG, name="Acme AI", admin_email="admin@acme.test",
                        actor=cli, admin_password=secret)
        ledger.fund(s, slug=SLUG, amount="10000000.00", idempotency_key="bench", actor=cli)
        for email in emails:
            orgs.add_person(s, slug=SLUG, email=email, password=secret, actor=cli)
            grants.create_grant(s, slug=SLUG, email=email, amount="100000.00", actor=cli)
        token, _row = orgs.create_token(s, slug=SLUG, email=None, actor=cli)
    app.extensions["wallet.engine"].dispose()
    return str(token), emails


# -- load --------------------------------------------------------------------------------


@dataclass
class Calls:
    """Latencies (seconds) by call, errors by kind, over some elapsed time."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    done: int = 0  # iterations that completed (a pair: both calls answered as expected)
    elapsed: float = 0.0

    def add(self, name: str, seconds: float) -> None:
        self.latencies.setdefault(name, []).append(seconds)

    def fail(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1

    def absorb(self, other: Calls) -> None:
        for name, values in other.latencies.items():
            self.latencies.setdefault(name, []).extend(values)
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count
        self.done += other.done
        self.elapsed += other.elapsed

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0


def load(clients: int, seconds: float, port: int,
         one: Callable[[int, Client, Calls], None]) -> Calls:
    """`clients` threads, each on its own keep-alive connection, for `seconds`."""
    total, lock = Calls(), threading.Lock()
    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()

    def worker(i: int) -> None:
        client, mine = Client(port), Calls()
        try:
            while time.perf_counter() < stop_at:
                one(i, client, mine)
        finally:
            client.close()
            with lock:
                total.absorb(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total.elapsed = time.perf_counter() - started
    return total


PairCall = Callable[[int, Client, Calls, float], None]


def pair_call(token: str, emails: list[str], last: dict[int, str]) -> PairCall:
    """One pair for client `i`: place, then capture. `due` is when the pair was meant to
    start (the paced phase), so a place that left late counts the wait it made."""
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [json.dumps({"person": email, **PLACE}).encode() for email in emails]

    def one(i: int, client: Client, mine: Calls, due: float) -> None:
        begun = time.perf_counter()
        status, raw = client.call("POST", f"{API}/holds", bodies[i],
                                  {**auth, "Idempotency-Key": uuid.uuid4().hex})
        placed = time.perf_counter()
        if status != 201:
            mine.fail(f"place {status} {_code(raw)}")
            return
        mine.add("place", placed - min(due, begun))
        mine.add("lag", max(0.0, begun - due))
        hold_id = json.loads(raw)["id"]
        status, raw = client.call("POST", f"{API}/holds/{hold_id}/capture", CAPTURE,
                                  {**auth, "Idempotency-Key": uuid.uuid4().hex})
        done = time.perf_counter()
        if status != 200 or json.loads(raw).get("state") != "captured":
            mine.fail(f"capture {status} {_code(raw)}")
            return
        mine.add("capture", done - placed)
        mine.add("pair", done - min(due, begun))
        mine.done += 1
        last[i] = hold_id

    return one


def pair_load(port: int, token: str, emails: list[str], seconds: float,
              last: dict[int, str]) -> Calls:
    """Closed loop: each client starts its next pair as soon as the last one is answered."""
    one = pair_call(token, emails, last)
    return load(len(emails), seconds, port,
                lambda i, client, mine: one(i, client, mine, float("inf")))


def paced_load(port: int, token: str, emails: list[str], seconds: float, rate: float,
               last: dict[int, str]) -> Calls:
    """Open loop: pairs start on a fixed schedule of `rate` pairs/s in all, whatever the
    answers do. Each client has its own slots, one every len(emails) / rate seconds,
    offset so that the clients' slots interleave evenly; a client still busy at its next
    slot starts that pair late, and the place's latency is counted from the slot."""
    one = pair_call(token, emails, last)
    clients = len(emails)
    period = clients / rate
    total, lock = Calls(), threading.Lock()
    start = time.perf_counter() + 0.05

    def worker(i: int) -> None:
        client, mine = Client(port), Calls()
        try:
            slot = start + period * i / clients
            while slot < start + seconds:
                wait = slot - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                one(i, client, mine, slot)
                slot += period
        finally:
            client.close()
            with lock:
                total.absorb(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total.elapsed = max(seconds, time.perf_counter() - start)
    return total


def plain_load(port: int, token: str, clients: int, seconds: float,
               targets: dict[int, str]) -> Calls:
    auth = {"Authorization": f"Bearer {token}"}
    paths = {i: f"{API}/holds/{hold_id}" for i, hold_id in targets.items()}

    def one(i: int, client: Client, mine: Calls) -> None:
        begun = time.perf_counter()
        status, raw = client.call("GET", paths[i % len(paths)], None, auth)
        if status != 200:
            mine.fail(f"get {status} {_code(raw)}")
            return
        mine.add("plain", time.perf_counter() - begun)
        mine.done += 1

    return load(clients, seconds, port, one)


def _code(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("code", "?"))
    except ValueError:
        return "?"


# -- one database ------------------------------------------------------------------------


def bench_one(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"wallet-bench-spend-{kind}-"))
    admin = None
    name = f"wallet_bench_spend_{uuid.uuid4().hex[:8]}"
    if kind == "postgresql":
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        target = make_url(url).set(database=name).render_as_string(hide_password=False)
    else:
        target = f"sqlite:///{tmp / 'wallet.sqlite3'}"
    inst = Instance(kind, target, tmp / "server", args.workers, args.threads)
    try:
        inst.folder.mkdir(parents=True)
        token, emails = prepare(inst, args.clients)
        inst.start()
        assert inst.process is not None
        sessions = {"server": os.getsid(inst.process.pid)}
        last: dict[int, str] = {}
        warm = pair_load(inst.port, token, emails, 2.0, last)  # connections, caches, plans
        if len(last) < len(emails):
            raise SystemExit(f"{kind}: the warm-up placed no hold for some clients:"
                             f" {warm.errors}\n{inst.log()}")
        targets = dict(last)  # captured holds the plain phase reads
        phases: dict[str, Callable[[], Calls]] = {
            "pairs": lambda: pair_load(inst.port, token, emails, args.seconds / args.rounds,
                                       last),
            "plain": lambda: plain_load(inst.port, token, args.clients,
                                        args.plain_seconds / args.rounds, targets),
        }
        runs = {k: Calls() for k in phases}
        spent = {k: dict.fromkeys([*sessions, "clients", "postgres", "other"], 0.0)
                 for k in phases}
        ticks = {k: (0, 0) for k in phases}
        round_ratios = []
        for _ in range(args.rounds):
            rates = {}
            for k, go in phases.items():
                cpu0, ticks0 = cpu_by_group(sessions), machine_ticks()
                run = go()
                cpu1, ticks1 = cpu_by_group(sessions), machine_ticks()
                for g in cpu1:
                    spent[k][g] += cpu1[g] - cpu0[g]
                ticks[k] = (ticks[k][0] + ticks1[0] - ticks0[0],
                            ticks[k][1] + ticks1[1] - ticks0[1])
                runs[k].absorb(run)
                rates[k] = run.rate
            round_ratios.append(round(rates["pairs"] / rates["plain"], 3))
        capacity = runs["pairs"].rate  # pairs/s at saturation, this run
        paced: list[tuple[float, float, Calls, float]] = []
        for share in args.paced:
            ticks0 = machine_ticks()
            run = paced_load(inst.port, token, emails, args.paced_seconds,
                             share * capacity, last)
            paced.append((share, share * capacity, run, busy_share(ticks0, machine_ticks())))
        captured = _count_captured(target)
        check = subprocess.run([wallet_bin(), "ledger", "check"], env=inst.env(),
                               capture_output=True, text=True, check=False)
    finally:
        inst.stop()
        if admin is not None:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    pairs, plain = runs["pairs"], runs["plain"]
    zero = dict.fromkeys(spent["pairs"], 0.0)
    ratio = pairs.rate / plain.rate if plain.rate else 0.0

    def ms(name: str, calls: Calls, p: float) -> float:
        return round(percentile(calls.latencies.get(name, []), p) * 1000, 2)

    paced_results = []
    for share, rate, run, busy in paced:
        paced_results.append({
            "load": share, "target_per_second": round(rate, 1),
            "per_second": round(run.rate, 1), "pairs": run.done, "errors": run.errors,
            "seconds": round(run.elapsed, 2), "machine_busy": busy,
            **{f"{n}_p{p}_ms": ms(n, run, p)
               for n in ("place", "capture", "pair") for p in (50, 99)},
            "start_lag_p99_ms": ms("lag", run, 99),
            "meets_p99": all(ms(n, run, 99) <= GOAL_P99_MS for n in ("place", "capture")),
        })
    p99 = {n: ms(n, pairs, 99) for n in ("place", "capture")}
    result: dict[str, Any] = {
        "bench": "spend", "db": kind, "clients": args.clients, "workers": args.workers,
        "threads": args.threads, "cpus": os.cpu_count(),
        "pairs": {"seconds": round(pairs.elapsed, 2), "pairs": pairs.done,
                  "per_second": round(pairs.rate, 1), "errors": pairs.errors,
                  **{f"{n}_p{p}_ms": ms(n, pairs, p)
                     for n in ("place", "capture", "pair") for p in (50, 99)}},
        "plain": {"endpoint": f"GET {API}/holds/<id>", "seconds": round(plain.elapsed, 2),
                  "requests": plain.done, "per_second": round(plain.rate, 1),
                  "errors": plain.errors,
                  "p50_ms": ms("plain", plain, 50), "p99_ms": ms("plain", plain, 99)},
        "cpu_ms_per_pair": cpu_per_request(zero, spent["pairs"], pairs.done),
        "cpu_ms_per_plain": cpu_per_request(zero, spent["plain"], plain.done),
        "machine_busy": {k: busy_share((0, 0), ticks[k]) for k in phases},
        "ratio": round(ratio, 3), "round_ratios": round_ratios, "goal_ratio": GOAL_RATIO,
        "goal_p99_ms": GOAL_P99_MS, "meets_ratio": ratio >= GOAL_RATIO,
        "saturated_meets_p99": all(v <= GOAL_P99_MS for v in p99.values()),
        "paced": paced_results,
        "meets_p99": {str(r["load"]): r["meets_p99"] for r in paced_results},
        "p99_goal_applies": kind == "postgresql",
        "captured_holds": captured,
        "pairs_ok_incl_warmup": pairs.done + warm.done + sum(r[2].done for r in paced),
        "ledger_check_exit": check.returncode,
    }
    report(result)
    return result


def _count_captured(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text(
                "SELECT count(*) FROM hold WHERE state = 'captured'")).scalar_one())
    finally:
        engine.dispose()


def report(r: dict[str, Any]) -> None:
    pairs, plain = r["pairs"], r["plain"]
    print(f"\n== {r['db']}: {r['clients']} clients, `wallet serve` {r['workers']} workers x"
          f" {r['threads']} threads, {r['cpus']} CPUs ==")
    print(f"{'':<34}{'rate':>11}{'p50 ms':>9}{'p99 ms':>9}{'count':>8}")
    print(f"{'plain ' + plain['endpoint']:<34}{plain['per_second']:>9.1f}/s"
          f"{plain['p50_ms']:>9.2f}{plain['p99_ms']:>9.2f}{plain['requests']:>8}")
    print(f"{'pair (place + capture)':<34}{pairs['per_second']:>9.1f}/s"
          f"{pairs['pair_p50_ms']:>9.2f}{pairs['pair_p99_ms']:>9.2f}{pairs['pairs']:>8}")
    for n in ("place", "capture"):
        print(f"{'  ' + n:<34}{'':>11}{pairs[f'{n}_p50_ms']:>9.2f}"
              f"{pairs[f'{n}_p99_ms']:>9.2f}")
    cpu_pair, cpu_plain = r["cpu_ms_per_pair"], r["cpu_ms_per_plain"]
    groups = [g for g in cpu_pair if g != "other" or cpu_pair[g] or cpu_plain[g]]
    print("CPU ms per pair:  " + ", ".join(f"{g} {cpu_pair[g]}" for g in groups)
          + f"  (CPUs busy {r['machine_busy']['pairs']:.0%})")
    print("CPU ms per plain: " + ", ".join(f"{g} {cpu_plain[g]}" for g in groups)
          + f"  (CPUs busy {r['machine_busy']['plain']:.0%})")
    if pairs["errors"] or plain["errors"]:
        print(f"errors: pairs {pairs['errors']}, plain {plain['errors']}")
    verdict = "met" if r["meets_ratio"] else "NOT met"
    print(f"ratio pairs/s / plain/s = {r['ratio']:.3f} (rounds {r['round_ratios']});"
          f" goal >= {r['goal_ratio']}: {verdict}")
    print(f"saturated (closed loop, {r['clients']} clients): p99 place"
          f" {pairs['place_p99_ms']:.2f} ms, capture {pairs['capture_p99_ms']:.2f} ms"
          " (queueing at capacity; the goal is judged paced, below)")
    if r["paced"]:
        print(f"paced (open loop, {r['clients']} clients, fixed arrival rate):")
        print(f"{'  load':<34}{'rate':>11}{'p50 ms':>9}{'p99 ms':>9}{'count':>8}")
    for p in r["paced"]:
        label = (f"  {p['load']:.0%} of {pairs['per_second']:.1f}/s ="
                 f" {p['target_per_second']:.1f}/s")
        print(f"{label:<34}{p['per_second']:>9.1f}/s{p['pair_p50_ms']:>9.2f}"
              f"{p['pair_p99_ms']:>9.2f}{p['pairs']:>8}   (CPUs busy {p['machine_busy']:.0%})")
        for n in ("place", "capture"):
            print(f"{'    ' + n:<34}{'':>11}{p[f'{n}_p50_ms']:>9.2f}{p[f'{n}_p99_ms']:>9.2f}")
        verdict = "met" if p["meets_p99"] else "NOT met"
        if not r["p99_goal_applies"]:
            verdict += " (for information: the goal is PostgreSQL's)"
        errors = f"; errors {p['errors']}" if p["errors"] else ""
        print(f"    p99 goal <= {r['goal_p99_ms']:.0f} ms each at {p['load']:.0%}: {verdict}"
              f" (start lag p99 {p['start_lag_p99_ms']:.2f} ms{errors})")
    consistent = r["captured_holds"] == r["pairs_ok_incl_warmup"]
    print(f"captured holds {r['captured_holds']} = successful pairs"
          f" {r['pairs_ok_incl_warmup']}: {'yes' if consistent else 'NO'};"
          f" wallet ledger check exit {r['ledger_check_exit']}")
    print(json.dumps(r))


def postgres_answers(url: str) -> bool:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                              connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _shares(text: str) -> list[float]:
    shares = [float(v) for v in text.split(",") if v.strip()]
    if any(not 0 < v <= 1 for v in shares):
        raise argparse.ArgumentTypeError("each share is above 0 and at most 1")
    return shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--url", default=os.environ.get("WALLET_BENCH_POSTGRES_URL")
                        or os.environ.get("WALLET_TEST_POSTGRES_URL") or DEFAULT_URL)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=24.0,
                        help="of pairs in all (spread over the rounds)")
    parser.add_argument("--plain-seconds", type=float, default=12.0,
                        help="of the baseline in all (spread over the rounds)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the pair and plain phases this many times")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--paced", type=_shares, default=[0.5, 0.7],
                        help="paced phases, as shares of the closed-loop pair rate"
                             " (comma-separated; empty: none)")
    parser.add_argument("--paced-seconds", type=float, default=20.0,
                        help="of each paced phase")
    args = parser.parse_args()

    url = normalise_database_url(args.url)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if "postgresql" in kinds and not postgres_answers(url):
        if args.db == "postgresql":
            raise SystemExit(f"no PostgreSQL answering at {make_url(url).host}")
        print(f"no PostgreSQL answering at {make_url(url).host}: SQLite only",
              file=sys.stderr)
        kinds.remove("postgresql")
    results = [bench_one(kind, url, args) for kind in kinds]
    ok = all(r["ledger_check_exit"] == 0
             and r["captured_holds"] == r["pairs_ok_incl_warmup"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
