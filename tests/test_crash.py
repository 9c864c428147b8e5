"""Crash test (issue 11): `kill -9` the issuer or the verifier mid-traffic; nothing is lost.

Two real `wallet serve` instances on PostgreSQL, each with its own database, keys and
trust: A serves acme (the issuer), B serves globex (the verifier). Client threads, one
per engineer, export notes at A (`POST /api/v1/orgs/acme/me/notes`) and honour them at
B (nonce, presentation, `POST /api/v1/orgs/globex/honour`), each request with its own
Idempotency-Key. Meanwhile a killer sends SIGKILL to A, B or both at random moments and
restarts them. The clients retry every unfinished request, byte for byte with the same
key, until it gets a final answer. After each seed, from both databases:

- every export answered once: one note per export, none extra;
- every note redeemed at most once at A;
- every honour answered 2xx credited exactly once at B (one honoured record, one
  ledger transfer), and every job ends honoured (nothing lost);
- every note A marks redeemed has B's honoured record, and the other way round;
- A's payable to B equals B's receivable from A, and both equal the notes' sum, to the
  micro; each engineer's wallets at A and B add up;
- the ledger invariants hold at both (and `wallet ledger check` at the end).

The servers and databases are reused across seeds (the checks are cumulative, which is
sound: every note, redemption and credit of an earlier seed must still be right).
A seed fixes the kill schedule, the amounts and the client's pacing; thread timing is
the operating system's, so a replay repeats the schedule, not the exact interleaving.

    WALLET_CRASH_SEEDS=200   how many seeds (default 30, CI)
    WALLET_CRASH_FIRST_SEED  the first seed (default 0)
    WALLET_CRASH_SEED=17     replay one seed
    WALLET_CRASH_VERBOSE=1   a line per seed (notes, kills, restart times)

PostgreSQL only: skipped when WALLET_TEST_POSTGRES_URL is unset (never in CI, where
conftest refuses to run without it). See docs/testing.md for the recorded figures.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from tests import crash_support as cs
from tests.conftest import IN_CI, PG_ENV

pytestmark = pytest.mark.slow

PASSWORD = "crash test password"
CLIENTS = 3  # engineers, one client thread each
GRANT = 100_000 * 1_000_000  # micros granted to each engineer at A (100,000.00)
MIN_JOBS = 2  # per client and seed, even when the kills are over quickly
MAX_JOBS = 40  # per client and seed
REQUEST_DEADLINE = 120.0  # seconds a request may take to reach a final answer, retries included
LEASE_SECONDS = 1  # idempotency lease: a crashed request's key is taken over after this
# B's circuit breaker for A opens after a few failures in a row (A is down): it still
# opens and probes here, but for 1 s rather than the default 30 s, so a seed takes seconds.
BREAKER_COOLDOWN = 1.0


def _seeds() -> list[int]:
    one = os.environ.get("WALLET_CRASH_SEED", "").strip()
    if one:
        return [int(one)]
    count = int(os.environ.get("WALLET_CRASH_SEEDS", "30"))
    first = int(os.environ.get("WALLET_CRASH_FIRST_SEED", "0"))
    return list(range(first, first + count))


# -- the world ---------------------------------------------------------------------------


@dataclass
class Engineer:
    index: int
    email: str
    holder: Ed25519PrivateKey
    token_a: str = ""
    token_b: str = ""

    @property
    def jwk(self) -> dict[str, str]:
        from wallet.core import jose

        return jose.public_jwk(self.holder)


@dataclass
class World:
    a: cs.Instance
    b: cs.Instance
    app_a: Flask
    app_b: Flask
    crew: list[Engineer]

    @property
    def issuer_a(self) -> str:
        return self.a.issuer("acme")

    @property
    def issuer_b(self) -> str:
        return self.b.issuer("globex")


def _prepare(a: cs.Instance, b: cs.Instance, app_a: Flask, app_b: Flask) -> World:
    """Organisations, people, funds, keys and tokens in-process; trust over HTTP."""
    from wallet import db
    from wallet.actions import grants, keys, orgs
    from wallet.actions import ledger as ledger_actions
    from wallet.actions import trust as trust_actions
    from wallet.actions._base import Actor

    cli = Actor.cli()
    crew = [Engineer(i, f"eng{i}@crash.test", Ed25519PrivateKey.generate())
            for i in range(CLIENTS)]
    with app_a.app_context():
        s = db.session()
        orgs.create_org(s, slug="acme", name="Acme AI", admin_email="admin@acme.test",
                        actor=cli, admin_password=PASSWORD)
        ledger_actions.fund(s, slug="acme", amount="1000000.00", idempotency_key="crash",
                            actor=cli)
        keys.generate(s, slug="acme", actor=cli)
        for e in crew:
            orgs.add_person(s, slug="acme", email=e.email, password=PASSWORD, actor=cli)
            grants.create_grant(s, slug="acme", email=e.email, amount="100000.00", actor=cli)
    with app_b.app_context():
        s = db.session()
        orgs.create_org(s, slug="globex", name="Globex", admin_email="admin@globex.test",
                        actor=cli, admin_password=PASSWORD)
        keys.generate(s, slug="globex", actor=cli)
        for e in crew:
            orgs.add_person(s, slug="globex", email=e.email, password=PASSWORD, actor=cli)
    for e in crew:
        e.token_a = cs.api_token(app_a, slug="acme", email=e.email)
        e.token_b = cs.api_token(app_b, slug="globex", email=e.email)
    a.start()
    b.start()
    with app_b.app_context():
        trust_actions.add(db.session(), slug="globex", issuer=a.issuer("acme"), actor=cli)
    with app_a.app_context():
        trust_actions.add(db.session(), slug="acme", issuer=b.issuer("globex"), actor=cli)
    return World(a, b, app_a, app_b, crew)


@pytest.fixture
def instances(_templates: Any, tmp_path: Path) -> Iterator[World]:
    """A and B running, set up, trusting each other; stopped and their apps disposed after."""
    if not os.environ.get(PG_ENV):
        if IN_CI:
            pytest.fail(f"CI=true but {PG_ENV} is not set: the crash test must run in CI")
        pytest.skip(f"the crash test runs on PostgreSQL only; set {PG_ENV}")
    # The synchronous honour path: a honour whose issuer is down is retried by the client
    # until it is answered 200. (With pending honours on, the default, it is answered 202
    # and a worker finishes it: tests/test_pending_honours.py.)
    extra = {"WALLET_IDEMPOTENCY_LEASE_SECONDS": LEASE_SECONDS,
             "WALLET_PEER_BREAKER_COOLDOWN_SECONDS": BREAKER_COOLDOWN,
             "WALLET_PENDING_HONOURS": False}
    with _templates.database("postgresql", tmp_path, "crash-a") as url_a, \
            _templates.database("postgresql", tmp_path, "crash-b") as url_b:
        a = cs.Instance("a", url_a, tmp_path / "a", extra=extra)
        b = cs.Instance("b", url_b, tmp_path / "b", extra=extra)
        apps = [a.app(), b.app()]
        try:
            yield _prepare(a, b, *apps)
        finally:
            a.stop()
            b.stop()
            for app in apps:
                app.extensions["wallet.engine"].dispose()
                http = app.extensions.get("wallet.http_transport")
                if http is not None:
                    http.close()


# -- the client --------------------------------------------------------------------------


@dataclass
class Stats:
    """What the clients saw, by request kind ("export", "nonce", "honour") and outcome."""

    seen: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # any 500: always a failure
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, outcome: str) -> None:
        with self.lock:
            self.seen[f"{kind} {outcome}"] += 1

    @property
    def requests(self) -> int:
        return sum(self.seen.values())

    def total(self, outcome: str) -> int:
        return sum(n for k, n in self.seen.items() if k.split(" ", 1)[1] == outcome)


RETRYABLE = {429, 502, 503, 504}


def _code(body: Any) -> str:
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def until_final(inst: cs.Instance, stats: Stats, kind: str, path: str, body: Any,
                headers: dict[str, str]) -> tuple[int, Any]:
    """POST the same request until it gets a final answer (a 2xx or a non-retryable 4xx)."""
    deadline = time.monotonic() + REQUEST_DEADLINE
    pause, cut_off, method = 0.02, False, "POST"
    while True:
        try:
            status, answer = cs.send(inst.port, method, path, body, headers)
        except cs.Down as down:
            stats.count(kind, "refused" if down.refused else "cut off")
            cut_off = cut_off or not down.refused
        else:
            code = _code(answer)
            if status in RETRYABLE or (status == 409 and code == "idempotency_in_flight"):
                stats.count(kind, f"{status} {code}".strip())
            else:
                stats.count(kind, str(status))
                if cut_off:  # the answer to a request a crash had cut off
                    stats.count(kind, "completed after a cut-off")
                if status >= 500:
                    with stats.lock:
                        stats.server_errors.append(f"{method} {path}: {status} {answer!r:.300}")
                return status, answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{method} {path} got no final answer in {REQUEST_DEADLINE}s")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


@dataclass
class Job:
    """One note's journey: export at A, honour at B."""

    seed: int
    engineer: Engineer
    amount: int  # micros
    export_key: str
    honour_key: str
    jti: str | None = None
    export: tuple[int, str] | None = None  # (status, code) of the final answer
    honour: tuple[int, str] | None = None
    error: str | None = None


def _amount(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def run_job(w: World, job: Job, stats: Stats) -> None:
    from wallet.core import notes

    e = job.engineer
    status, exported = until_final(
        w.a, stats, "export", "/api/v1/orgs/acme/me/notes",
        {"amount": _amount(job.amount), "holder_jwk": e.jwk},
        {"Authorization": f"Bearer {e.token_a}", "Idempotency-Key": job.export_key})
    job.export = (status, _code(exported))
    if status != 201:
        return
    job.jti = str(exported["jti"])
    pause, deadline = 0.02, time.monotonic() + REQUEST_DEADLINE
    while True:  # a nonce is a fresh draw: asking again after a crash is always safe
        try:
            status, issued = cs.fetch_nonce(w.b, slug="globex", token=e.token_b)
        except cs.Down as down:
            stats.count("nonce", "refused" if down.refused else "cut off")
        else:
            stats.count("nonce", str(status))
            if status == 201:
                break
            if status not in RETRYABLE:
                raise AssertionError(f"nonce: {status} {issued!r:.300}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no nonce from B in {REQUEST_DEADLINE}s")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
    presentation = notes.present(str(exported["note"]), holder_key=e.holder,
                                 audience=w.issuer_b, nonce=str(issued["nonce"]),
                                 iat=int(time.time()))
    status, honoured = until_final(
        w.b, stats, "honour", "/api/v1/orgs/globex/honour", {"presentations": [presentation]},
        {"Authorization": f"Bearer {e.token_b}", "Idempotency-Key": job.honour_key})
    job.honour = (status, _code(honoured))
    if status == 200 and not (honoured.get("honoured") == 1
                              and honoured["results"][0]["jti"] == job.jti):
        job.error = f"honour answered 200 without crediting the note: {honoured!r:.300}"


def client(w: World, seed: int, e: Engineer, stop: threading.Event, jobs: list[Job],
           stats: Stats, failures: list[str]) -> None:
    rng = random.Random(f"{seed}:client:{e.index}")
    try:
        for n in range(MAX_JOBS):
            if n >= MIN_JOBS and stop.is_set():
                return
            job = Job(seed, e, rng.randint(1, 9_999_999), f"export-{seed}-{e.index}-{n}",
                      f"honour-{seed}-{e.index}-{n}-{uuid.uuid4().hex[:6]}")
            jobs.append(job)
            run_job(w, job, stats)
            time.sleep(rng.uniform(0, 0.05))
    except Exception as err:  # reported with the seed by the test, not lost in a thread
        failures.append(f"client {e.index}: {type(err).__name__}: {err}")


@dataclass
class Kill:
    target: str
    at: float  # seconds after the seed began
    restart_seconds: float = 0.0


def killer(w: World, seed: int, stop: threading.Event, kills: list[Kill],
           failures: list[str]) -> None:
    rng = random.Random(f"{seed}:killer")
    began = time.monotonic()
    try:
        for _ in range(rng.choice((1, 1, 2))):
            time.sleep(rng.uniform(0.05, 0.8))
            target = rng.choices(["a", "b", "ab"], weights=[45, 45, 10])[0]
            victims = [inst for inst in (w.a, w.b) if inst.name in target]
            kill = Kill(target, time.monotonic() - began)
            for inst in victims:
                inst.kill()
            time.sleep(rng.uniform(0.0, 0.3))  # down for a while: clients keep retrying
            for inst in victims:
                kill.restart_seconds += inst.start()
            kills.append(kill)
    except Exception as err:
        failures.append(f"killer: {type(err).__name__}: {err}")
    finally:
        stop.set()


# -- the checks --------------------------------------------------------------------------


def _org_id(conn: sa.Connection, slug: str) -> int:
    return int(conn.execute(sa.text("SELECT id FROM organization WHERE slug = :s"),
                            {"s": slug}).scalar_one())


def _balance(conn: sa.Connection, org_id: int, name: str) -> int:
    value = conn.execute(sa.text(
        "SELECT balance FROM account WHERE org_id = :o AND name = :n AND currency = 'USD'"),
        {"o": org_id, "n": name}).scalar()
    return int(value or 0)


def _person_ids(conn: sa.Connection) -> dict[str, int]:
    return {str(email): int(pid) for email, pid in conn.execute(
        sa.text("SELECT email, id FROM person"))}


def check(w: World, jobs: list[Job]) -> list[str]:
    """Everything the crash test promises, read from both databases; the problems found."""
    from wallet import db
    from wallet.actions import ledger as ledger_actions

    problems: list[str] = []
    for job in jobs:
        label = f"seed {job.seed} {job.export_key} ({job.jti})"
        if job.error:
            problems.append(f"{label}: {job.error}")
        if job.export != (201, ""):
            problems.append(f"{label}: export ended {job.export}, not 201")
        elif job.honour is None or job.honour[0] != 200:
            problems.append(f"{label}: honour ended {job.honour}, not 200 (a lost honour)")
    exported = {job.jti: job for job in jobs if job.jti}

    with w.app_a.extensions["wallet.engine"].connect() as c:
        acme = _org_id(c, "acme")
        notes_a = {str(jti): (str(state), int(amount), int(pid), by) for jti, state, amount,
                   pid, by in c.execute(sa.text(
                       "SELECT jti, state, amount, person_id, redeemed_by FROM note"
                       " WHERE org_id = :o"), {"o": acme})}
        redemptions = list(c.execute(sa.text(
            "SELECT n.jti, r.redeemer, r.amount FROM redemption r JOIN note n"
            " ON n.id = r.note_id WHERE r.org_id = :o"), {"o": acme}))
        payable = _balance(c, acme, f"payable:{w.issuer_b}")
        ids_a = _person_ids(c)
        wallets_a = {e.email: _balance(c, acme, f"wallet:{ids_a[e.email]}") for e in w.crew}
    with w.app_b.extensions["wallet.engine"].connect() as c:
        globex = _org_id(c, "globex")
        honoured = list(c.execute(sa.text(
            "SELECT note_jti, amount, person_id FROM honoured_note"
            " WHERE org_id = :o AND issuer = :i"), {"o": globex, "i": w.issuer_a}))
        honour_keys = Counter(str(k) for (k,) in c.execute(sa.text(
            "SELECT idempotency_key FROM transfer WHERE org_id = :o AND kind = 'honour'"),
            {"o": globex}))
        receivable = _balance(c, globex, f"receivable:{w.issuer_a}")
        ids_b = _person_ids(c)
        wallets_b = {e.email: _balance(c, globex, f"wallet:{ids_b[e.email]}") for e in w.crew}

    # Exports: one note per export answered, none that no client was told about.
    if set(notes_a) != set(exported):
        problems.append(f"notes at A without an answered export: {set(notes_a) - set(exported)};"
                        f" exports without a note: {set(exported) - set(notes_a)}")
    for jti, job in exported.items():
        if jti in notes_a and notes_a[jti][1] != job.amount:
            problems.append(f"note {jti}: A holds {notes_a[jti][1]} micros, exported {job.amount}")
    # At most once at A.
    per_note = Counter(str(jti) for jti, _r, _a in redemptions)
    problems += [f"note {j} redeemed {n} times at A" for j, n in per_note.items() if n > 1]
    problems += [f"note {jti} redeemed by {redeemer}, not B" for jti, redeemer, _a
                 in redemptions if redeemer != w.issuer_b]
    # Exactly once at B for every 2xx.
    per_honour = Counter(str(jti) for jti, _a, _p in honoured)
    for job in jobs:
        if job.honour and job.honour[0] == 200 and job.jti:
            if per_honour[job.jti] != 1:
                problems.append(f"note {job.jti}: honoured 200, {per_honour[job.jti]} records")
            key = f"honour:{w.issuer_a}:{job.jti}"
            if honour_keys[key] != 1:
                problems.append(f"note {job.jti}: honoured 200, {honour_keys[key]} transfers")
    # Redeemed at A <=> honoured at B.
    redeemed_a = {jti for jti, (state, *_rest) in notes_a.items() if state == "redeemed"}
    if redeemed_a != set(per_honour):
        problems.append(f"redeemed at A, not honoured at B: {redeemed_a - set(per_honour)};"
                        f" honoured at B, not redeemed at A: {set(per_honour) - redeemed_a}")
    if set(per_note) != redeemed_a:
        problems.append(f"redeemed notes and redemption records differ: "
                        f"{set(per_note) ^ redeemed_a}")
    # The sums, to the micro.
    redeemed_sum = sum(int(a) for _j, _r, a in redemptions)
    honoured_sum = sum(int(a) for _j, a, _p in honoured)
    expected = sum(job.amount for job in jobs if job.honour and job.honour[0] == 200)
    if not payable == -receivable == redeemed_sum == honoured_sum == expected:
        problems.append(f"sums differ (micros): A payable {payable}, B receivable {receivable},"
                        f" redemptions {redeemed_sum}, honoured {honoured_sum},"
                        f" honoured by the clients {expected}")
    for e in w.crew:
        mine = [job for job in jobs if job.engineer is e]
        out = sum(job.amount for job in mine if job.jti)
        if wallets_a[e.email] != GRANT - out:
            problems.append(f"{e.email} at A: wallet {wallets_a[e.email]}, expected"
                            f" {GRANT - out} (granted {GRANT}, exported {out})")
        credited = sum(job.amount for job in mine if job.honour and job.honour[0] == 200)
        if wallets_b[e.email] != credited:
            problems.append(f"{e.email} at B: wallet {wallets_b[e.email]}, honoured {credited}")
    # The ledger invariants at both.
    for name, app in (("A", w.app_a), ("B", w.app_b)):
        with app.app_context():
            report = ledger_actions.check(db.session())
        problems += [f"ledger at {name} ({slug}): {p}" for slug, ps in report.items() for p in ps]
    return problems


# -- the test ----------------------------------------------------------------------------


def test_kill_9_of_issuer_or_verifier_loses_nothing(
        instances: World, capsys: pytest.CaptureFixture[str]) -> None:
    w, seeds = instances, _seeds()
    stats, jobs, kills = Stats(), [], []
    began = time.monotonic()
    for seed in seeds:
        stop, failures = threading.Event(), []
        these: list[Job] = []
        mine: list[Kill] = []
        threads = [threading.Thread(target=client, args=(w, seed, e, stop, these, stats,
                                                         failures), name=f"client-{e.index}")
                   for e in w.crew]
        threads.append(threading.Thread(target=killer, args=(w, seed, stop, mine, failures),
                                        name="killer"))
        for t in threads:
            t.start()
        for t in threads:
            t.join(REQUEST_DEADLINE * 4)
        jobs += these
        kills += mine
        if os.environ.get("WALLET_CRASH_VERBOSE"):
            print(f"seed {seed}: {len(these)} notes, kills "
                  f"{[(k.target, round(k.at, 2), round(k.restart_seconds, 2)) for k in mine]},"
                  f" {time.monotonic() - began:.1f} s so far")
        alive = [t.name for t in threads if t.is_alive()]
        problems = failures + [f"thread {n} still running" for n in alive] + check(w, jobs)
        problems += stats.server_errors
        if problems:
            listed = "\n  ".join(problems[:30])
            pytest.fail(f"crash test seed {seed} failed (replay: WALLET_CRASH_SEED={seed});"
                        f" kills {[(k.target, round(k.at, 2)) for k in mine]}:\n  {listed}")
    for inst in (w.a, w.b):
        checked = inst.cli("ledger", "check")
        assert checked.returncode == 0 and "ok" in checked.stdout, (checked.stdout,
                                                                    checked.stderr)
        assert "Traceback" not in inst.log(10**7), inst.log()
    elapsed = time.monotonic() - began
    restarts = sum(len(k.target) for k in kills)
    with capsys.disabled():  # the figures docs/testing.md records
        print(f"\ncrash test: seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), kills {len(kills)}"
              f" ({restarts} instance restarts; A {sum('a' in k.target for k in kills)},"
              f" B {sum('b' in k.target for k in kills)}), notes {len(jobs)},"
              f" requests {stats.requests}, {elapsed:.0f} s; {dict(sorted(stats.seen.items()))}")
    assert kills and stats.total("cut off"), "no kill cut a request off: nothing was tested"
