"""Benchmark: exporting notes over the API under gunicorn on PostgreSQL, and the workers'
memory afterwards (issue 14).

One instance runs under gunicorn with the production settings (`deploy/gunicorn.conf.py`,
what `make serve-prod` runs: gthread workers, 4 threads each, recycling, the access log)
on loopback, on a scratch PostgreSQL database (created, migrated and dropped by this
script). Organisation acme is funded, its signing key kept in the database
(`WALLET_KEY_STORAGE=db`, as behind a balancer), and --clients engineers each hold
credit and a personal API token. Then, alternating in --rounds rounds:

- **export**: each client is an engineer's client exporting notes as a real one does:
  `POST /api/v1/orgs/acme/me/notes` with its bearer token, a fresh `Idempotency-Key` and
  `{"amount": "0.01", "holder_jwk": …}` (its own Ed25519 holder key, made with
  `wallet.core.jose`); one request is one note (201, the signed note in the answer);
- **plain** (the baseline): the same clients GET /healthz, a JSON endpoint that reads
  the database.

After the load, the resident memory of each gunicorn worker is read from
/proc/<pid>/status (VmRSS, and its peak VmHWM), with the readings after each round, and
the workers' ids are compared with those before (a worker recycled by `max_requests`
would start small again). Then `wallet ledger check`, and the notes recorded against the
exports answered 201.

Goals: RSS of every worker after the load <= 150 MB (10^6 bytes); the throughput ratio
export/plain has none ("report").

    .venv/bin/python bench/export.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--clients 16] [--seconds 30] [--plain-seconds 10] [--rounds 3] [--workers 2]
        [--threads 4]

The URL (or WALLET_BENCH_POSTGRES_URL, else WALLET_TEST_POSTGRES_URL) names a server and
a database to connect to for CREATE DATABASE; without PostgreSQL there it refuses (exit
2). Prints a table and one JSON line; exits 1 when the ledger check or the count of
notes disagrees, or the memory goal is not met.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _goals import figure
from _scratch import (
    ProdInstance,
    admin_engine_or_refuse,
    default_url,
    machine,
    machine_line,
    scratch_databases,
    status_kib,
    stop_on_sigterm,
    wallet_bin,
)
from honour import (
    Client,
    Run,
    busy_share,
    cpu_by_group,
    cpu_per_request,
    load,
    machine_ticks,
    percentile,
    plain_load,
)

from wallet import create_app, db
from wallet.actions import keys, orgs
from wallet.actions import ledger as ledger_actions
from wallet.actions._base import Actor
from wallet.core import jose, ledger
from wallet.db import make_engine
from wallet.store import ledger as ledger_store
from wallet.store import people

SLUG = "acme"
EXPORT = f"/api/v1/orgs/{SLUG}/me/notes"
AMOUNT = "0.01"
GOAL_RSS_MB = 150.0
CLI = Actor.cli()


@dataclass
class Engineer:
    email: str
    token: str
    holder_jwk: dict[str, str]


def prepare(inst: ProdInstance, clients: int) -> list[Engineer]:
    """acme, funded, with its key in the database; one engineer per client with credit
    (a grant posting) and a personal API token."""
    app = create_app(inst.config())
    crew = []
    with app.app_context():
        s = db.session()
        orgs.create_org(s, slug=SLUG, name="Acme AI", admin_email="admin@acme.test",
                        actor=CLI, admin_password=uuid.uuid4().hex)
        ledger_actions.fund(s, slug=SLUG, amount="10000000.00", idempotency_key="bench",
                            actor=CLI)
        keys.generate(s, slug=SLUG, actor=CLI)
        org = people.org_by_slug(s, slug=SLUG)
        assert org is not None and org.id is not None
        for i in range(clients):
            email = f"eng{i:02d}@bench.test"
            added = orgs.add_person(s, slug=SLUG, email=email, password=uuid.uuid4().hex,
                                    actor=CLI)
            assert added.person.id is not None
            ledger_store.post(s, org_id=org.id, posting=ledger.Posting(
                ledger.POOL, ledger.wallet(added.person.id), 100_000 * 1_000_000, "USD",
                "grant", f"bench:{email}"))
            s.commit()
            token, _row = orgs.create_token(s, slug=SLUG, email=email, actor=CLI)
            crew.append(Engineer(email, str(token),
                                 jose.public_jwk(Ed25519PrivateKey.generate())))
    app.extensions["wallet.engine"].dispose()
    return crew


def export_load(inst: ProdInstance, crew: list[Engineer], seconds: float) -> Run:
    """Each client exports notes of its engineer, one request per note, for `seconds`."""
    bodies = [json.dumps({"amount": AMOUNT, "holder_jwk": e.holder_jwk}).encode()
              for e in crew]

    def one(i: int, client: Client, mine: Run) -> bool:
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {crew[i].token}",
                   "Idempotency-Key": uuid.uuid4().hex}
        begun = time.perf_counter()
        status, body = client.call("POST", EXPORT, bodies[i], headers)
        if status == 201 and b'"note"' in body:
            mine.latencies.append(time.perf_counter() - begun)
        else:
            code = (json.loads(body) if body.startswith(b"{") else {}).get("code", "?")
            mine.errors[f"{status} {code}"] = mine.errors.get(f"{status} {code}", 0) + 1
        return True

    return load(len(crew), seconds, one, inst.port)


def rss(pids: list[int]) -> dict[str, dict[str, float]]:
    """VmRSS and VmHWM of each process, in MB (10^6 bytes), and its CPU seconds so far
    (which worker did the work: a keep-alive connection stays with the worker that
    accepted it)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        now, peak = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if now is not None and peak is not None:
            out[str(pid)] = {"rss_mb": round(now * 1024 / 1e6, 1),
                             "peak_mb": round(peak * 1024 / 1e6, 1),
                             "cpu_s": round((int(fields[11]) + int(fields[12])) / tick, 2)}
    return out


def count_notes(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text("SELECT count(*) FROM note")).scalar_one())
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=default_url())
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="of exporting in all, spread over the rounds")
    parser.add_argument("--plain-seconds", type=float, default=10.0,
                        help="of the plain endpoint in all, spread over the rounds")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the export and plain phases this many times")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers (WEB_CONCURRENCY; the config's default on"
                             " 2 CPUs)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    args = parser.parse_args()
    stop_on_sigterm()
    info = machine()
    admin = admin_engine_or_refuse(args.url, "bench/export.py")
    print(machine_line(info), file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="wallet-bench-export-"))
    inst: ProdInstance | None = None
    try:
        with scratch_databases(admin, "wallet_bench_export", 1) as (url,):
            try:
                inst = ProdInstance("export", url, tmp / "export", args.workers, args.threads)
                crew = prepare(inst, args.clients)
                inst.start()
                workers_before = inst.workers_now()
                warmup = export_load(inst, crew[:2], 1.0)  # connections, keys, caches
                warm = rss(workers_before)
                sessions = {"server": os.getsid(workers_before[0])}
                phases = {
                    "export": lambda: export_load(inst, crew, args.seconds / args.rounds),
                    "plain": lambda: plain_load(inst, args.clients,
                                                args.plain_seconds / args.rounds),
                }
                runs = {kind: Run() for kind in phases}
                spent = {kind: dict.fromkeys([*sessions, "clients", "postgres", "other"], 0.0)
                         for kind in phases}
                ticks = {kind: (0, 0) for kind in phases}
                round_ratios, rss_by_round = [], []
                for _round in range(args.rounds):
                    rates = {}
                    for kind, go in phases.items():
                        cpu0, ticks0 = cpu_by_group(sessions), machine_ticks()
                        run = go()
                        cpu1, ticks1 = cpu_by_group(sessions), machine_ticks()
                        for k in cpu1:
                            spent[kind][k] += cpu1[k] - cpu0[k]
                        ticks[kind] = (ticks[kind][0] + ticks1[0] - ticks0[0],
                                       ticks[kind][1] + ticks1[1] - ticks0[1])
                        runs[kind].absorb(run)
                        rates[kind] = run.rate
                    round_ratios.append(round(rates["export"] / rates["plain"], 3))
                    rss_by_round.append(rss(inst.workers_now()))
                workers_after = inst.workers_now()
                after = rss(workers_after)
                load_after = [round(x, 2) for x in os.getloadavg()]
                notes_rows = count_notes(url)
                check = subprocess.run([wallet_bin(), "ledger", "check"], env=inst.env(),
                                       capture_output=True, text=True, check=False).returncode
            finally:  # the server stops before its database is dropped
                if inst is not None:
                    inst.stop()
    finally:
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    export, plain = runs["export"], runs["plain"]
    zero = dict.fromkeys(spent["export"], 0.0)
    cpu = {kind: cpu_per_request(zero, spent[kind], runs[kind].ok) for kind in phases}
    busy = {kind: busy_share((0, 0), ticks[kind]) for kind in phases}
    ratio = statistics.median(round_ratios)
    worst = max((v["rss_mb"] for v in after.values()), default=0.0)
    recycled = sorted(set(workers_before) - set(workers_after))
    met = worst <= GOAL_RSS_MB and bool(after)
    consistent = notes_rows == export.ok + warmup.ok and check == 0
    result = {
        "bench": "export", "clients": args.clients, "workers": args.workers,
        "threads": args.threads, "server": "gunicorn -c deploy/gunicorn.conf.py",
        "machine": info, "load_after": load_after,
        "export": {"endpoint": f"POST {EXPORT}", "seconds": round(export.elapsed, 2),
                   "notes": export.ok, "per_second": round(export.rate, 1),
                   "p50_ms": round(percentile(export.latencies, 50) * 1000, 1),
                   "p99_ms": round(percentile(export.latencies, 99) * 1000, 1),
                   "errors": export.errors},
        "plain": {"endpoint": "GET /healthz", "seconds": round(plain.elapsed, 2),
                  "requests": plain.ok, "per_second": round(plain.rate, 1),
                  "p50_ms": round(percentile(plain.latencies, 50) * 1000, 2),
                  "p99_ms": round(percentile(plain.latencies, 99) * 1000, 2),
                  "errors": plain.errors},
        "ratio": ratio, "round_ratios": round_ratios, "goal_ratio": "report",
        "cpu_ms_per_request": cpu, "machine_busy": busy,
        "rss_after_warmup": warm, "rss_by_round": rss_by_round, "rss_after": after,
        "max_rss_mb": worst, "goal_rss_mb": GOAL_RSS_MB, "met_rss": met,
        "workers_recycled": recycled, "notes_recorded": notes_rows,
        "warmup_notes": warmup.ok,
        "ledger_check_exit": check,
    }
    print(f"export benchmark: {args.clients} clients, gunicorn (deploy/gunicorn.conf.py)"
          f" {args.workers} workers x {args.threads} threads, PostgreSQL")
    print(machine_line(info) + f"; after the load {load_after}")
    print()
    print(f"{'':34} {'throughput':>11} {'p50 ms':>8} {'p99 ms':>8} {'count':>7}")
    print(f"{'export (POST me/notes, 1 note)':34} {export.rate:>9.1f}/s"
          f" {result['export']['p50_ms']:>8.1f} {result['export']['p99_ms']:>8.1f}"
          f" {export.ok:>7}")
    print(f"{'plain GET /healthz':34} {plain.rate:>9.1f}/s {result['plain']['p50_ms']:>8.2f}"
          f" {result['plain']['p99_ms']:>8.2f} {plain.ok:>7}")
    for kind, split in cpu.items():
        print(f"CPU ms per {kind} request: " + ", ".join(
            f"{k} {v:.2f}" for k, v in split.items()) + f" (total {sum(split.values()):.2f};"
            f" CPUs {busy[kind]:.0%} busy)")
    print()
    print(f"{'worker':>8} {'RSS warm':>9} " + " ".join(
        f"{'round ' + str(i + 1):>8}" for i in range(len(rss_by_round)))
        + f" {'RSS after':>10} {'peak':>7}  (MB) {'CPU s':>7}")
    for pid in sorted(after):
        print(f"{pid:>8} {warm.get(pid, {}).get('rss_mb', float('nan')):>9.1f} "
              + " ".join(f"{r.get(pid, {}).get('rss_mb', float('nan')):>8.1f}"
                         for r in rss_by_round)
              + f" {after[pid]['rss_mb']:>10.1f} {after[pid]['peak_mb']:>7.1f}"
              f"      {after[pid]['cpu_s']:>7.1f}")
    if recycled:
        print(f"workers replaced during the run (max_requests): {recycled}")
    print()
    print(f"ratio export/plain = {ratio:.3f} (median of rounds: "
          f"{', '.join(map(str, round_ratios))}; goal: report)")
    print(f"max RSS per worker after the load = {worst:.1f} MB (goal <= {GOAL_RSS_MB:.0f} MB)"
          f" {'met' if met else 'NOT met'}")
    print(f"errors {export.errors or 'none'}; notes recorded {notes_rows}; ledger check"
          f" exit {check}")
    figure("export", "max RSS per gunicorn worker after the load", worst, "<=", GOAL_RSS_MB,
           unit=" MB", digits=1)
    figure("export", "export notes/s", export.rate, "report", unit="/s", digits=1)
    figure("export", "ratio export/plain GET /healthz (median of rounds)", ratio, "report")
    print(json.dumps(result, sort_keys=True))
    return 0 if consistent and met else 1


if __name__ == "__main__":
    sys.exit(main())
