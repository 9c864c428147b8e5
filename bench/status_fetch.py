"""Benchmark: a verifier checking 10,000 notes from one issuer fetches each status list at
most once per `ttl` (issue 14).

Instance A (acme, the issuer) and instance B (globex, the verifier) each run `wallet serve`
(2 workers of 4 threads, its defaults) on loopback with their own scratch PostgreSQL
database (created, migrated and dropped by this script). A is reached only through a
counting proxy in this script: A's base URL (its issuer id, and so every status list URI
inside its notes) is the proxy's address, and the proxy records every request B makes to
A, with the time and the B worker process that made it (the connection's owner, found in
/proc). A signs 10,000 notes beforehand (in bulk, through the store: A's key, A's list
allocation bound of 4,096 notes per list, so they span 3 lists), and B trusts A.

Then, in order:

1. **cold, then warm**: --clients connections verify all the notes at B
   (`POST /api/v1/orgs/globex/verify` with `{"note": …}`, anonymously, as a verifier's
   client checks a note), in random order, every list cold at the start; in --rounds
   rounds of a fifth of the notes, each followed by the baselines of the same run: the
   raw signature check (Ed25519 verify of the round's notes' signing inputs in this
   process, `cryptography`) and a plain JSON endpoint (GET /healthz at B, which reads
   the database) for its share of --plain-seconds. A's `ttl` is 120 s by default, so
   that the whole phase fits in one `ttl` on a busy 2-CPU machine;
2. **after the ttl**: wait until every list B holds has expired (its `ttl` after its
   fetch), then verify --again notes (drawn from every list) again.

Reported: the status-list fetches A saw, per list and B process, and per list for all of
B together: the most in any window of one `ttl` (the goal), during phase 1, in its first
`ttl`, and after the expiry (1 per list and process again); verify throughput in phase 1
against the raw signature check and against the plain endpoint (the medians of the
rounds' ratios; no goal given: "report").

Goal: at most 1 fetch per list per `ttl` by each process of the verifier. Each process
keeps its own lists (docs/deployment.md), so B as a whole fetches each list once per
`ttl` and worker; that figure is printed too.

    .venv/bin/python bench/status_fetch.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--notes 10000] [--clients 8] [--ttl 120] [--rounds 5] [--again 1000]
        [--plain-seconds 5] [--workers 2] [--threads 4] [--quick]

The URL (or WALLET_BENCH_POSTGRES_URL, else WALLET_TEST_POSTGRES_URL) names a server and
a database to connect to for CREATE DATABASE; without PostgreSQL there it refuses (exit
2). Prints a table and one JSON line; exits 1 when a note failed to verify or the goal is
not met.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _goals import figure
from _scratch import (
    admin_engine_or_refuse,
    children,
    default_url,
    machine,
    machine_line,
    scratch_databases,
    stop_on_sigterm,
    wallet_bin,
)
from honour import Client, Instance, percentile, plain_load

from wallet import create_app, db
from wallet.actions import orgs, signing
from wallet.actions._base import Actor
from wallet.core import jose, ledger, notes
from wallet.core.money import Money
from wallet.models import Note
from wallet.store import ledger as ledger_store
from wallet.store import notes as note_store
from wallet.store import people

PASSWORD = "bench password 123"  # noqa: S105 (scratch databases, dropped at the end)
CLI = Actor.cli()
GOAL_PER_TTL = 1  # fetches of one list by one verifier process within one ttl
LIST_SIZE, PER_LIST = 131_072, 4096  # the product's defaults (WALLET_STATUS_LIST_*)
VERIFY = "/api/v1/orgs/globex/verify"


# -- the counting proxy in front of A ----------------------------------------------------


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    status: int
    pid: int | None  # the process at the other end of the connection (a B worker)


def _socket_owner(client_port: int, server_port: int, candidates: list[int]) -> int | None:
    """The process among `candidates` holding the local end of 127.0.0.1:client_port ->
    127.0.0.1:server_port (by its socket inode in /proc/net/tcp, then the processes' fds)."""
    want_local, want_remote = f"0100007F:{client_port:04X}", f"0100007F:{server_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1] == want_local and parts[2] == want_remote:
            inode = parts[9]
            break
    if inode is None:
        return None
    link = f"socket:[{inode}]"
    for pid in candidates:
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(fd.path) == link:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


class CountingProxy:
    """A tiny keep-alive HTTP proxy to one upstream port that records every request."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.owners: list[int] = []  # processes that may be the client (B's workers)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            pid: int | None = None

            def setup(self) -> None:
                super().setup()
                self.pid = _socket_owner(self.client_address[1], proxy.port, proxy.owners)
                self.upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream,
                                                           timeout=30)

            def finish(self) -> None:
                self.upstream.close()
                super().finish()

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive")}
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                answer = self.upstream.getresponse()
                payload = answer.read()
                with proxy.lock:
                    proxy.seen.append(Seen(time.monotonic(), self.command, self.path,
                                           answer.status, self.pid))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                            "content-length", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = forward

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def status_fetches(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if "/status/" in s.path and s.method == "GET"]


@dataclass
class Issuer(Instance):
    """Instance A: it listens on `port`, but its base URL (issuer id) is the proxy's."""

    public_port: int = 0
    ttl: int = 60

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "WALLET_STATUS_LIST_TTL": self.ttl}


# -- preparation -------------------------------------------------------------------------


def prepare(a: Issuer, b: Instance, tmp: Path, count: int) -> list[str]:
    """The organisations and trust through the CLI; `count` notes signed by A in bulk."""
    password = tmp / "password"
    password.write_text(PASSWORD + "\n")
    a.cli("org", "create", "acme", "--name", "Acme AI", "--admin-email", "admin@acme.test",
          "--password-file", str(password))
    a.cli("fund", "--org", "acme", "--amount", f"{count}.00", "--idempotency-key", "bench")
    a.cli("keys", "generate", "--org", "acme")
    b.cli("org", "create", "globex", "--name", "Globex", "--admin-email", "admin@globex.test",
          "--password-file", str(password))
    b.cli("keys", "generate", "--org", "globex")
    a.start()
    b.start()
    b.cli("trust", "add", "--org", "globex", a.issuer("acme"))
    return bulk_notes(a, count)


def bulk_notes(a: Issuer, count: int) -> list[str]:
    """`count` notes of 1.00 USD to one engineer, signed with A's key and recorded as an
    export records them (what `actions.notes._issue` writes, list by list of 4,096 at
    random indexes), with one ledger posting for them all; the notes, shuffled."""
    app = create_app(a.config())
    holder = jose.public_jwk(Ed25519PrivateKey.generate())
    rng = random.Random(14)
    tokens = []
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        person = orgs.add_person(s, slug="acme", email="eng@bench.test", password=PASSWORD,
                                 actor=CLI).person
        assert person.id is not None
        micros = 1_000_000
        for source, destination, kind in ((ledger.POOL, ledger.wallet(person.id), "grant"),
                                          (ledger.wallet(person.id), ledger.NOTES_OUTSTANDING,
                                           "export")):
            ledger_store.post(s, org_id=org.id, posting=ledger.Posting(
                source, destination, count * micros, "USD", kind, f"bench:{kind}",
                memo="bench notes"))
        kid, key = signing.signer(s, org=org)
        issuer = signing.issuer_id(org)
        now = datetime.now(UTC).replace(microsecond=0)
        iat, exp = int(now.timestamp()), int((now + timedelta(days=365)).timestamp())
        rows = []
        for number in range(1, (count - 1) // PER_LIST + 2):
            note_store.open_list(s, org_id=org.id, number=number, size=LIST_SIZE, now=now)
            placed = min(PER_LIST, count - (number - 1) * PER_LIST)
            for idx in rng.sample(range(LIST_SIZE), placed):
                jti = notes.new_jti(rng.randbytes(16))
                token = notes.issue(issuer=issuer, jti=jti, iat=iat, exp=exp,
                                    amount=Money(micros), holder_jwk=holder,
                                    status_uri=f"{issuer}/status/{number}", status_idx=idx,
                                    kid=kid, key=key)
                tokens.append(token)
                rows.append({
                    "org_id": org.id, "jti": jti, "person_id": person.id, "amount": micros,
                    "currency": "USD", "holder_jkt": jose.thumbprint(holder),
                    "holder_jwk": holder, "kid": kid, "status_list": number,
                    "status_idx": idx, "state": "active", "issued_at": now,
                    "expires_at": now + timedelta(days=365), "token": token})
        s.execute(sa.insert(Note.__table__), rows)
        s.commit()
    app.extensions["wallet.engine"].dispose()
    rng.shuffle(tokens)
    return tokens


# -- load --------------------------------------------------------------------------------


@dataclass
class Verified:
    latencies: list[float] = field(default_factory=list)
    invalid: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)  # the first message per refusal
    started: float = 0.0  # time.monotonic()
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def absorb(self, other: Verified) -> None:
        """Add a later run's requests and time to this one (rounds of one phase)."""
        self.started = self.started or other.started
        self.latencies += other.latencies
        self.invalid.update(other.invalid)
        self.messages = {**other.messages, **self.messages}
        self.elapsed += other.elapsed


def verify_all(port: int, tokens: list[str], clients: int) -> Verified:
    """Verify every token once at B, `clients` connections taking the next one in turn."""
    done, lock, todo = Verified(), threading.Lock(), iter(tokens)
    messages = done.messages

    def worker() -> None:
        client, mine, bad = Client(port), [], Counter[str]()
        try:
            while True:
                with lock:
                    token = next(todo, None)
                if token is None:
                    break
                payload = json.dumps({"note": token}).encode()
                t0 = time.perf_counter()
                status, body = client.call("POST", VERIFY, payload,
                                           {"Content-Type": "application/json"})
                mine.append(time.perf_counter() - t0)
                answer = json.loads(body) if body.startswith(b"{") else {}
                if status != 200 or answer.get("valid") is not True:
                    errors = answer.get("errors") or [answer]
                    key = f"{status} " + ",".join(str(e.get("code", "?")) for e in errors)
                    bad[key] += 1
                    messages.setdefault(key, str(errors[0].get("message")
                                                 or errors[0].get("detail", ""))[:200])
        finally:
            client.close()
            with lock:
                done.latencies += mine
                done.invalid.update(bad)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    done.started = time.monotonic()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.elapsed = time.perf_counter() - t0
    return done


def raw_rate(tokens: list[str], public: Any) -> float:
    """Ed25519 verifications per second of the notes' signing inputs (the floor)."""
    inputs = []
    for text in tokens:
        signing_input, _, signature = text[:-1].rpartition(".")
        inputs.append((jose.b64url_decode(signature), signing_input.encode("ascii")))
    for signature, data in inputs[:200]:  # warm-up
        public.verify(signature, data)
    t0 = time.perf_counter()
    for signature, data in inputs:
        public.verify(signature, data)
    return len(inputs) / (time.perf_counter() - t0)


def issuer_public_key(a: Issuer) -> Any:
    """A's public key as B pinned it (from A's JWKS, through the proxy's upstream)."""
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    try:
        conn.request("GET", "/orgs/acme/jwks.json")
        answer = conn.getresponse()
        jwks = json.loads(answer.read())
    finally:
        conn.close()
    return jose.PublicKey.from_jwk(jwks["keys"][0]).key


# -- counting ----------------------------------------------------------------------------


def most_in_a_ttl(times: list[float], ttl: float) -> int:
    """The most of `times` inside any window of `ttl` seconds."""
    ordered, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= ttl:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def list_of(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def tally(seen: list[Seen], start: float, stop: float) -> dict[str, dict[str, int]]:
    """Fetches per list and process (pid as text; "?" when unknown) in [start, stop)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in seen:
        if start <= s.at < stop:
            out[list_of(s.path)][str(s.pid or "?")] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def windows(seen: list[Seen], ttl: float) -> tuple[dict[str, int], dict[str, int]]:
    """The most fetches of each list within one ttl: by any one process, and by all."""
    by_list: dict[str, list[Seen]] = defaultdict(list)
    for s in seen:
        by_list[list_of(s.path)].append(s)
    per_process, together = {}, {}
    for name, items in sorted(by_list.items()):
        pids = {s.pid for s in items}
        per_process[name] = max(most_in_a_ttl([s.at for s in items if s.pid == pid], ttl)
                                for pid in pids)
        together[name] = most_in_a_ttl([s.at for s in items], ttl)
    return per_process, together


# -- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=default_url())
    parser.add_argument("--notes", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    # 10,000 verifies take 50-60 s on a busy 2-CPU machine: 120 s holds them in one ttl.
    parser.add_argument("--ttl", type=int, default=120,
                        help="the issuer's WALLET_STATUS_LIST_TTL (1-300 s)")
    parser.add_argument("--again", type=int, default=1000,
                        help="notes verified again after the lists expired")
    parser.add_argument("--plain-seconds", type=float, default=5.0,
                        help="of the plain endpoint in all, spread over the rounds")
    parser.add_argument("--rounds", type=int, default=5,
                        help="phase 1 in this many rounds, each followed by the baselines")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2,000 notes, ttl 20 s, 300 again, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.notes, args.ttl, args.again, args.rounds, args.plain_seconds = 2000, 20, 300, 2, 2.0
    if not 1 <= args.ttl <= 300:
        parser.error("--ttl must be 1-300 seconds")
    stop_on_sigterm()
    info = machine()
    admin = admin_engine_or_refuse(args.url, "bench/status_fetch.py")
    print(machine_line(info), file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="wallet-bench-status-"))
    instances: list[Instance] = []
    proxy: CountingProxy | None = None
    try:
        with scratch_databases(admin, "wallet_bench_status", 2) as (url_a, url_b):
            try:
                a = Issuer("a", url_a, tmp / "a", args.workers, args.threads, ttl=args.ttl)
                proxy = CountingProxy(a.port)
                a.public_port = proxy.port
                proxy.start()
                b = Instance("b", url_b, tmp / "b", args.workers, args.threads)
                instances = [a, b]
                run = measure(args, a, b, proxy, tmp)
            finally:  # the servers stop before their databases are dropped
                for inst in instances:
                    inst.stop()
                if proxy is not None:
                    proxy.stop()
    finally:
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    return report(args, info, run)


@dataclass
class Measured:
    tokens: list[str]
    cold: Verified
    cold_end: float
    raws: list[float]
    plains: list[Any]
    rounds: list[dict[str, float]]
    again_from: float
    sample: list[str]
    again: Verified
    seen: list[Seen]
    checks: dict[str, int]


def measure(args: argparse.Namespace, a: Issuer, b: Instance, proxy: CountingProxy,
            tmp: Path) -> Measured:
    """Prepare, then the three phases; what the proxy saw."""
    t0 = time.perf_counter()
    tokens = prepare(a, b, tmp, args.notes)
    assert b.process is not None
    proxy.owners = children(b.process.pid)
    print(f"prepared two instances and {len(tokens)} notes in"
          f" {time.perf_counter() - t0:.1f}s; B's workers {proxy.owners}", file=sys.stderr)
    # Phase 1 in rounds, each followed by its baselines: a machine that slows down or
    # speeds up mid-run (other tenants) moves both sides of each round's ratios alike.
    cold, raws, plains, rounds = Verified(), [], [], []
    public = issuer_public_key(a)
    for r in range(args.rounds):
        chunk = tokens[r * len(tokens) // args.rounds:(r + 1) * len(tokens) // args.rounds]
        part = verify_all(b.port, chunk, args.clients)
        cold_end = time.monotonic()
        raw = raw_rate(chunk, public)
        plain = plain_load(b, args.clients, args.plain_seconds / args.rounds)
        cold.absorb(part)
        raws.append(raw)
        plains.append(plain)
        rounds.append({"verify_per_second": round(part.rate, 1), "raw_per_second": round(raw),
                       "plain_per_second": round(plain.rate, 1),
                       "verify_to_raw": round(part.rate / raw, 4),
                       "verify_to_plain": round(part.rate / plain.rate, 3)})
    # Every list a B process holds expires `ttl` after that process fetched it.
    last = max((s.at for s in proxy.status_fetches()), default=time.monotonic())
    wait = max(0.0, last + args.ttl + 1.0 - time.monotonic())
    print(f"waiting {wait:.0f}s for the lists to expire (ttl {args.ttl}s)", file=sys.stderr)
    time.sleep(wait)
    again_from = time.monotonic()
    sample = tokens[:args.again]  # shuffled: every list is in it
    again = verify_all(b.port, sample, args.clients)
    seen = proxy.status_fetches()
    checks = {inst.name: subprocess.run(
        [wallet_bin(), "ledger", "check"], env=inst.env(), capture_output=True,
        text=True, check=False).returncode for inst in (a, b)}
    return Measured(tokens, cold, cold_end, raws, plains, rounds, again_from, sample, again,
                    seen, checks)


def report(args: argparse.Namespace, info: dict[str, Any], run: Measured) -> int:
    """Print the table and the JSON line; the exit status."""
    tokens, cold, cold_end = run.tokens, run.cold, run.cold_end
    raw = statistics.median(run.raws)
    plain_rate = sum(p.ok for p in run.plains) / sum(p.elapsed for p in run.plains)
    to_raw = round(statistics.median(r["verify_to_raw"] for r in run.rounds), 4)
    to_plain = round(statistics.median(r["verify_to_plain"] for r in run.rounds), 3)
    plain_errors: Counter[str] = Counter()
    for p in run.plains:
        plain_errors.update(p.errors)
    again_from, sample, again, seen, checks = (run.again_from, run.sample, run.again,
                                               run.seen, run.checks)
    ttl = float(args.ttl)
    span = cold_end - cold.started  # phase 1 from its first request to its last answer
    lists = sorted({list_of(s.path) for s in seen})
    per_process, together = windows(seen, ttl)
    phase1 = tally(seen, cold.started, cold_end)
    within_first_ttl = tally(seen, cold.started, cold.started + ttl)
    after = tally(seen, again_from, float("inf"))
    unknown = sum(1 for s in seen if s.pid is None)
    worst = max(per_process.values(), default=0)
    met = worst <= GOAL_PER_TTL and unknown == 0
    expired_again = all(after.get(name) for name in lists)
    result = {
        "bench": "status_fetch", "notes": len(tokens), "lists": lists, "ttl_s": args.ttl,
        "clients": args.clients, "workers": args.workers, "threads": args.threads,
        "machine": info,
        "verify_all": {"seconds": round(cold.elapsed, 2), "per_second": round(cold.rate, 1),
                       "p50_ms": round(percentile(cold.latencies, 50) * 1000, 2),
                       "p99_ms": round(percentile(cold.latencies, 99) * 1000, 2),
                       "invalid": dict(cold.invalid), "messages": cold.messages,
                       "wall_seconds": round(span, 2),
                       "within_one_ttl": span < ttl},
        "again": {"notes": len(sample), "seconds": round(again.elapsed, 2),
                  "per_second": round(again.rate, 1), "invalid": dict(again.invalid),
                  "messages": again.messages},
        "raw_signature_per_second": round(raw, 1),
        "plain": {"endpoint": "GET /healthz", "per_second": round(plain_rate, 1),
                  "errors": dict(plain_errors)},
        "rounds": run.rounds,
        "ratio_verify_to_raw": to_raw, "ratio_verify_to_plain": to_plain,
        "fetches": {"phase1_by_list_and_process": phase1,
                    "first_ttl_by_list_and_process": within_first_ttl,
                    "after_expiry_by_list_and_process": after,
                    "most_per_ttl_per_process": per_process,
                    "most_per_ttl_all_processes": together,
                    "unattributed": unknown, "total": len(seen)},
        "goal_per_process_per_ttl": GOAL_PER_TTL, "met": met,
        "refetched_after_expiry": expired_again, "ledger_check_exit": checks,
    }

    print(f"status fetch benchmark: {len(tokens)} notes from one issuer over lists"
          f" {', '.join(lists)}; ttl {args.ttl}s; {args.clients} clients;"
          f" B = {args.workers} workers x {args.threads} threads")
    print(machine_line(info))
    print()
    print(f"{'':34}{'notes/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'count':>8}{'invalid':>9}")
    print(f"{'verify, cold then warm (phase 1)':34}{cold.rate:>10.1f}"
          f"{percentile(cold.latencies, 50) * 1000:>9.2f}"
          f"{percentile(cold.latencies, 99) * 1000:>9.2f}{len(cold.latencies):>8}"
          f"{sum(cold.invalid.values()):>9}")
    print(f"{'verify after the ttl (phase 3)':34}{again.rate:>10.1f}"
          f"{percentile(again.latencies, 50) * 1000:>9.2f}"
          f"{percentile(again.latencies, 99) * 1000:>9.2f}{len(again.latencies):>8}"
          f"{sum(again.invalid.values()):>9}")
    print(f"{'raw Ed25519 verify, in-process':34}{raw:>10.1f}")
    print(f"{'plain GET /healthz':34}{plain_rate:>10.1f}")
    print()
    print(f"{'list':>6}  {'phase 1 (by B process)':<30}{'first ttl':<22}{'after expiry':<22}"
          f"{'most/ttl/proc':>14}{'most/ttl/all':>13}")
    def fmt(by: dict[str, dict[str, int]], name: str) -> str:
        return " ".join(f"{pid}:{n}" for pid, n in sorted(by.get(name, {}).items())) or "-"

    for name in lists:
        print(f"{name:>6}  {fmt(phase1, name):<30}{fmt(within_first_ttl, name):<22}"
              f"{fmt(after, name):<22}"
              f"{per_process[name]:>14}{together[name]:>13}")
    print()
    if not result["verify_all"]["within_one_ttl"]:
        print(f"note: phase 1 took {span:.1f}s, longer than one ttl ({args.ttl}s):"
              " later fetches are refreshes, judged by the ttl windows")
    for key, message in {**again.messages, **cold.messages}.items():
        print(f"refused: {key} x{cold.invalid[key] + again.invalid[key]}, e.g. {message!r}")
    print(f"fetches per list per ttl, per verifier process: at most {worst}"
          f" (goal <= {GOAL_PER_TTL}) {'met' if met else 'NOT met'}"
          + (f"; {unknown} fetches from an unknown process" if unknown else ""))
    print(f"fetches per list per ttl, all {args.workers} B processes together: at most"
          f" {max(together.values(), default=0)} (each process keeps its own lists;"
          " goal: report)")
    print(f"after expiry every list was fetched again: {'yes' if expired_again else 'NO'}"
          f" ({', '.join(f'{n}: {sum(after.get(n, {}).values())}' for n in lists)})")
    print(f"ratio verify/raw signature = {to_raw:.4f} (rounds: "
          f"{', '.join(str(r['verify_to_raw']) for r in run.rounds)}), verify/plain ="
          f" {to_plain:.3f} (rounds: {', '.join(str(r['verify_to_plain']) for r in run.rounds)});"
          f" medians of the rounds; goal: report")
    print(f"ledger check {checks}")
    name = "status_fetch"
    figure(name, "fetches per list per ttl, each verifier process", worst, "<=", GOAL_PER_TTL,
           digits=0)
    figure(name, f"fetches per list per ttl, all {args.workers} verifier processes",
           max(together.values(), default=0), "report", digits=0)
    figure(name, "fetches per list and process after the ttl expired",
           max((n for by in after.values() for n in by.values()), default=0), "report",
           digits=0)
    figure(name, "verify notes/s, lists warm (phase 1)", cold.rate, "report", digits=1,
           unit="/s")
    figure(name, "ratio verify/raw signature check (median of rounds)", to_raw, "report",
           digits=4)
    figure(name, "ratio verify/plain GET /healthz (median of rounds)", to_plain, "report")
    print(json.dumps(result, sort_keys=True))
    valid = not cold.invalid and not again.invalid and all(v == 0 for v in checks.values())
    return 0 if met and valid and expired_again else 1


if __name__ == "__main__":
    sys.exit(main())
