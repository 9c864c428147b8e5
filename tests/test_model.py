"""Model-based test (issue 11): random journeys through the actions layer against a model.

A hypothesis `RuleBasedStateMachine` drives `wallet.actions.*` on one app with two
organisations that trust each other (the in-process transport, as in the federation
tests): fund, grant (immediate and vesting, some dated in the past or future), the clock
moving on, vest, spend on compute, export, revoke, honour at the issuer (refused) and at
the other organisation, retries of an honour after a failure, the honour API with its
Idempotency-Key (the same body gets the same answer, another body
`idempotency_conflict`), replays of every other idempotency key with the same and with
different values, and peer faults injected at `app.extensions["wallet.transport"]`
(the issuer down, its redeem endpoint down, its redeem answer lost after it committed).

The model is plain Python: balances per account, notes and their states, idempotency
keys and what they were used for, tranches and whether they were posted. Vesting dates
are computed here from the rules in docs/grants.md, not by `wallet.core.vesting`.
After every step: the database's balances equal the model's to the micro (every
account of both organisations), nothing is negative where that is forbidden, the
ledger invariants hold (`wallet.actions.ledger.check`), note states match, and each
note is redeemed at most once and honoured at most once.

Each example makes a fresh pair of organisations on the test's database, so examples are
independent. Both databases. Settings (environment):

    WALLET_MODEL_EXAMPLES=30  examples per database (default 30)
    WALLET_MODEL_STEPS=30     steps per example (default 30)
    WALLET_MODEL_SEED=123     replay a run (the seed is printed; --hypothesis-seed too)

A failure prints the seed and a `@reproduce_failure` blob (print_blob).
"""

from __future__ import annotations

import calendar
import collections
import os
import random
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests import fed_support as fs
from tests import grant_helpers, support
from tests.support import PASSWORD
from wallet import clock, db
from wallet.actions import grants as grant_actions
from wallet.actions import honour as honour_actions
from wallet.actions import keys as key_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions import notes as note_actions
from wallet.actions import orgs as org_actions
from wallet.actions import trust as trust_actions
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor
from wallet.core import jose, notes
from wallet.core.errors import (
    Conflict,
    IdempotencyConflict,
    InsufficientFunds,
    IssuerUnavailable,
)
from wallet.models import Account, HonouredNote, Note, Redemption
from wallet.store import people

pytestmark = pytest.mark.slow  # about a minute per database at the CI setting

CLI = Actor.cli()
MICROS = 1_000_000
ENGINEERS = 2
MODEL_NAME = "model-x"
PRICE_IN, PRICE_OUT = 500_000, 1_500_000  # micros per million tokens
NEGATIVE_OK = ("external", "receivable")
# Injected at the verifier's transport for one honour step: the issuer down, its redeem
# endpoint down, or its redeem answer lost after the issuer committed.
FAULTS = st.sampled_from([None, None, None, "down", "redeem_down", "lost_answer"])
EXAMPLES = int(os.environ.get("WALLET_MODEL_EXAMPLES", "30"))
STEPS = int(os.environ.get("WALLET_MODEL_STEPS", "30"))


def _id(row: Any) -> int:
    assert row is not None and row.id is not None
    return int(row.id)


def _money(micros: int) -> str:
    return f"{micros // MICROS}.{micros % MICROS:06d}"


def _add_months(d: date, n: int) -> date:
    """Calendar months later, the day clamped to the month's end (docs/grants.md)."""
    year, month0 = divmod(d.year * 12 + d.month - 1 + n, 12)
    return date(year, month0 + 1, min(d.day, calendar.monthrange(year, month0 + 1)[1]))


def _plan(amount: int, start: date, months: int, cliff: int) -> list[tuple[date, int]]:
    """(due date, micros) of a monthly grant: equal parts, the remainder last, and the
    parts due before the cliff paid on the cliff date."""
    if months == 0:
        return [(start, amount)]
    share, rest = divmod(amount, months)
    cliff_day = _add_months(start, cliff)
    parts = [(max(_add_months(start, k), cliff_day), share + (rest if k == months else 0))
             for k in range(1, months + 1)]
    return [(day, part) for day, part in parts if part]


# -- how the engineer asks for a nonce and signs in (one function each) -------------------


def nonce_for(session: Any, *, slug: str, person_id: int) -> str:
    """A presentation nonce of `slug`, asked for as the engineer (bound to them)."""
    value, _expires = nonce_actions.new_nonce(session, slug=slug, person_id=person_id)
    return value


def sign_in(session: Any, *, slug: str, email: str) -> str:
    """The engineer's API bearer token at `slug`."""
    value, _row = org_actions.create_token(session, slug=slug, email=email, actor=CLI)
    return value


def api_nonce(client: Any, *, slug: str, token: str) -> str:
    """A nonce through the API, asked for with the engineer's bearer token."""
    answer = client.post(f"/api/v1/orgs/{slug}/nonces",
                         headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return str(answer.get_json()["nonce"])


# -- the model ---------------------------------------------------------------------------


@dataclass
class MNote:
    """A note as the model knows it."""

    jti: str
    issuer: str  # slug
    email: str
    amount: int
    holder: int  # which of the engineer's holder keys
    token: str
    state: str = "active"  # active, revoked, redeemed
    credited: bool = False  # honoured (credited) at the other organisation

    @property
    def exp(self) -> int:
        """When the note expires (its `exp` claim): the clock moves, so notes expire."""
        payload = self.token.split("~", 1)[0].split(".")[1]
        return int(jose.json_object(jose.b64url_decode(payload))["exp"])


def _presented_at(presentations: list[str]) -> int:
    """When the (first) presentation was made: its KB-JWT's iat."""
    kb = presentations[0].rsplit("~", 1)[1]
    return int(jose.json_object(jose.b64url_decode(kb.split(".")[1]))["iat"])


@dataclass
class Attempt:
    """An honour request that may be sent again (same consumer, same presentations)."""

    verifier: str
    email: str
    jti: str
    consumer: str
    presentations: list[str]


@dataclass
class ApiCall:
    """An honour request made through the API under an Idempotency-Key."""

    verifier: str
    email: str
    jti: str
    key: str
    body: dict[str, Any]
    status: int
    answer: Any


@dataclass
class Books:
    """Everything the model expects of the database."""

    balances: dict[tuple[str, str], int] = field(default_factory=dict)  # (slug, account)
    fund_keys: dict[tuple[str, str], int] = field(default_factory=dict)
    grant_keys: dict[tuple[str, str], tuple[str, int, date, int, int]] = field(
        default_factory=dict)
    export_keys: dict[tuple[str, str, str], tuple[int, int, str]] = field(default_factory=dict)
    usage_keys: dict[tuple[str, str], tuple[str, int, int]] = field(default_factory=dict)
    first: dict[tuple[str, str, str], int] = field(default_factory=dict)  # key -> row id
    tranches: dict[tuple[str, str], list[list[Any]]] = field(default_factory=dict)
    notes: dict[str, MNote] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    api_calls: list[ApiCall] = field(default_factory=list)

    def move(self, slug: str, source: str, destination: str, amount: int) -> None:
        self.balances[(slug, source)] = self.balances.get((slug, source), 0) - amount
        self.balances[(slug, destination)] = self.balances.get((slug, destination), 0) + amount

    def balance(self, slug: str, account: str) -> int:
        return self.balances.get((slug, account), 0)


# -- the machine -------------------------------------------------------------------------


class Journeys(RuleBasedStateMachine):
    """Random journeys; `app` is set by the test before it runs (its clock is faked)."""

    app: Flask
    made = 0
    seen: collections.Counter[str] = collections.Counter()  # what the steps did, for the log
    checked = 0  # states compared with the database (after every step)

    def __init__(self) -> None:
        super().__init__()
        self.ctx = self.app.app_context()
        self.ctx.push()
        self.session = db.session()
        self.books = Books()
        self.fault: str | None = None
        self.transport = fs.FaultTransport(self._fault).install(self.app)
        self.client = self.app.test_client()
        self.clock = datetime.now(UTC).date()
        grant_helpers.set_clock(self.app, self.clock)

    def teardown(self) -> None:
        self.app.extensions.pop("wallet.transport", None)
        self.session.rollback()
        self.session.close()
        self.ctx.pop()

    # -- set-up ------------------------------------------------------------------------

    @initialize()
    def two_organisations(self) -> None:
        Journeys.made += 1
        n, tag = Journeys.made, secrets.token_hex(3)
        self.slugs = [f"m{n}x-{tag}", f"m{n}y-{tag}"]
        self.emails = [f"e{i}.{n}.{tag}@model.test" for i in range(ENGINEERS)]
        s = self.session
        for slug in self.slugs:
            org_actions.create_org(s, slug=slug, name=slug, admin_email=f"admin@{slug}.test",
                                   actor=CLI, admin_password=PASSWORD)
            for email in self.emails:
                org_actions.add_person(s, slug=slug, email=email, password=PASSWORD, actor=CLI)
            key_actions.generate(s, slug=slug, actor=CLI)
            usage_actions.set_price(s, slug=slug, model=MODEL_NAME,
                                    input_price=_money(PRICE_IN),
                                    output_price=_money(PRICE_OUT), actor=CLI)
        x, y = self.slugs
        trust_actions.add(s, slug=x, issuer=fs.issuer(y), actor=CLI)
        trust_actions.add(s, slug=y, issuer=fs.issuer(x), actor=CLI)
        self.pid = {e: _id(people.person_by_email(s, email=e)) for e in self.emails}
        self.org_ids = {slug: _id(people.org_by_slug(s, slug=slug)) for slug in self.slugs}
        self.tokens = {(slug, e): sign_in(s, slug=slug, email=e)
                       for slug in self.slugs for e in self.emails}
        self.holders = {(e, h): Ed25519PrivateKey.generate()
                        for e in self.emails for h in (0, 1)}
        s.rollback()
        # Something to work with from the first step: both pools funded, every engineer
        # granted some credit and holding a note (booked through the model like any step).
        for org, slug in enumerate(self.slugs):
            self.fund(org, 20_000 * MICROS, "start")
            for email in self.emails:
                self._grant(slug, email, 1000 * MICROS, self.clock, 0, 0, None)
                self._export(slug, email, 100 * MICROS, 0, None)

    # -- helpers -----------------------------------------------------------------------

    def _fault(self, method: str, url: str, forward: Any) -> Any:
        if self.fault == "down":
            raise IssuerUnavailable(f"{url} could not be reached: [Errno 111] refused")
        if self.fault == "redeem_down" and fs.is_redeem(url):
            raise IssuerUnavailable(f"{url} could not be reached: [Errno 111] refused")
        if self.fault == "lost_answer" and fs.is_redeem(url):
            forward()  # the issuer redeems and commits; its answer never arrives
            raise IssuerUnavailable(f"{url}: the connection was reset")
        return forward()

    def wallet(self, email: str) -> str:
        return f"wallet:{self.pid[email]}"

    def unvested(self, email: str) -> str:
        return f"unvested:{self.pid[email]}"

    def other(self, slug: str) -> str:
        return self.slugs[1 - self.slugs.index(slug)]

    def _vest_model(self, slug: str, email: str | None = None, *, why: str) -> None:
        """Post the model's due tranches (of one engineer, or all) at `slug`."""
        for (where, who), items in self.books.tranches.items():
            if where != slug or (email is not None and who != email):
                continue
            for item in items:
                due, amount, posted = item
                if not posted and due <= self.clock:
                    item[2] = True
                    self.books.move(slug, self.unvested(who), self.wallet(who), amount)
                    Journeys.seen[f"tranche vested by {why}"] += 1

    def _outcome(self, what: str, call: Any) -> tuple[str, Any]:
        kind, value = "ok", None
        try:
            value = call()
        except IdempotencyConflict:
            kind = "conflict"
        except InsufficientFunds:
            kind = "insufficient"
        except Conflict:
            kind = "refused"
        created = getattr(value, "created", True)
        Journeys.seen[f"{what} {kind}{'' if created else ' (replayed)'}"] += 1
        return kind, value

    # -- funding and grants ------------------------------------------------------------

    @rule(org=st.integers(0, 1), amount=st.integers(1, 5000 * MICROS),
          key=st.sampled_from(["f0", "f1", "f2"]))
    def fund(self, org: int, amount: int, key: str) -> None:
        slug = self.slugs[org]
        seen = self.books.fund_keys.get((slug, key))
        kind, recorded = self._outcome("fund", lambda: ledger_actions.fund(
            self.session, slug=slug, amount=_money(amount), idempotency_key=key, actor=CLI))
        if seen is None:
            assert kind == "ok" and recorded.created
            self.books.fund_keys[(slug, key)] = amount
            self.books.first[("fund", slug, key)] = recorded.transfer.id
            self.books.move(slug, "external", "pool", amount)
        elif seen == amount:  # the same answer: the transfer the key made
            assert kind == "ok" and not recorded.created
            assert recorded.transfer.id == self.books.first[("fund", slug, key)]
        else:
            assert kind == "conflict"

    def _grant(self, slug: str, email: str, amount: int, start: date, months: int,
               cliff: int, key: str | None) -> None:
        request = (email, amount, start, months, cliff)
        seen = None if key is None else self.books.grant_keys.get((slug, key))
        kind, result = self._outcome("grant", lambda: grant_actions.create_grant(
            self.session, slug=slug, email=email, amount=_money(amount), start=start,
            every="month" if months else None, months=months or None,
            cliff_months=cliff if months else None, request_key=key, actor=CLI))
        if seen is not None:
            assert kind == ("ok" if seen == request else "conflict"), (kind, seen, request)
            if kind == "ok":
                assert not result.created
                assert result.grant.id == self.books.first[("grant", slug, str(key))]
            return
        if self.books.balance(slug, "pool") < amount:
            assert kind == "insufficient"
            return
        assert kind == "ok" and result.created, kind
        if key is not None:
            self.books.grant_keys[(slug, key)] = request
            self.books.first[("grant", slug, key)] = result.grant.id
        immediate = months == 0 and start <= self.clock
        if immediate:
            self.books.move(slug, "pool", self.wallet(email), amount)
        else:
            self.books.move(slug, "pool", self.unvested(email), amount)
            self.books.tranches.setdefault((slug, email), []).extend(
                [due, part, False] for due, part in _plan(amount, start, months, cliff))
        self._vest_model(slug, email, why="grant")  # the engineer's tranches already due

    @rule(org=st.integers(0, 1), who=st.integers(0, ENGINEERS - 1),
          amount=st.integers(1, 8000 * MICROS), offset=st.sampled_from([0, 0, -30, 15]),
          key=st.sampled_from([None, "g0", "g1"]))
    def grant_immediate(self, org: int, who: int, amount: int, offset: int,
                        key: str | None) -> None:
        self._grant(self.slugs[org], self.emails[who], amount,
                    self.clock + timedelta(days=offset), 0, 0, key)

    @rule(org=st.integers(0, 1), who=st.integers(0, ENGINEERS - 1),
          amount=st.integers(1, 8000 * MICROS), months=st.integers(1, 6),
          cliff=st.integers(0, 6), offset=st.sampled_from([0, -40, -200]),
          key=st.sampled_from([None, "v0", "v1"]))
    def grant_vesting(self, org: int, who: int, amount: int, months: int, cliff: int,
                      offset: int, key: str | None) -> None:
        self._grant(self.slugs[org], self.emails[who], amount,
                    self.clock + timedelta(days=offset), months, min(cliff, months), key)

    @rule(data=st.data())
    def replay_grant(self, data: st.DataObject) -> None:
        """A grant form sent again: the same values replay, others conflict."""
        if not self.books.grant_keys:
            return
        (slug, key), (email, amount, start, months, cliff) = data.draw(
            st.sampled_from(sorted(self.books.grant_keys.items())))
        amount += data.draw(st.sampled_from([0, 0, 1]))
        self._grant(slug, email, amount, start, months, cliff, key)

    @rule(days=st.sampled_from([1, 29, 31, 92, 200]))
    def clock_moves_on(self, days: int) -> None:
        self.clock += timedelta(days=days)
        grant_helpers.set_clock(self.app, self.clock)

    @rule(org=st.integers(0, 1))
    def vest(self, org: int) -> None:
        slug = self.slugs[org]
        due = sum(item[1] for (where, _who), items in self.books.tranches.items()
                  if where == slug for item in items if not item[2] and item[0] <= self.clock)
        run = grant_actions.vest(self.session, slug=slug, actor=CLI)
        assert run.amount == due
        Journeys.seen[f"vest {'some' if due else 'nothing'}"] += 1
        self._vest_model(slug, why="vest")

    # -- spending ----------------------------------------------------------------------

    @rule(org=st.integers(0, 1), who=st.integers(0, ENGINEERS - 1),
          tokens_in=st.integers(1, 10**7) | st.integers(10**9, 4 * 10**9),
          tokens_out=st.integers(0, 10**7) | st.integers(10**8, 10**9),
          key=st.sampled_from(["u0", "u1", "u2", "u3"]))
    def spend(self, org: int, who: int, tokens_in: int, tokens_out: int, key: str) -> None:
        slug, email = self.slugs[org], self.emails[who]
        request = (email, tokens_in, tokens_out)
        seen = self.books.usage_keys.get((slug, key))
        kind, usage = self._outcome("spend", lambda: usage_actions.record_usage(
            self.session, slug=slug, email=email, model=MODEL_NAME, input_tokens=tokens_in,
            output_tokens=tokens_out, idempotency_key=key, actor=CLI))
        self._vest_model(slug, email, why="spend")  # lazy vesting, before anything is decided
        if seen is not None:
            assert kind == ("ok" if seen == request else "conflict"), (kind, seen, request)
            if kind == "ok":
                assert not usage.created
                assert usage.record.id == self.books.first[("usage", slug, key)]
            return
        cost = -(-(tokens_in * PRICE_IN + tokens_out * PRICE_OUT) // MICROS)
        if self.books.balance(slug, self.wallet(email)) < cost:
            assert kind == "insufficient"
            return
        assert kind == "ok" and usage.created and usage.record.cost == cost
        self.books.usage_keys[(slug, key)] = request
        self.books.first[("usage", slug, key)] = usage.record.id
        self.books.move(slug, self.wallet(email), "spent", cost)
        assert usage.available == self.books.balance(slug, self.wallet(email))

    # -- notes -------------------------------------------------------------------------

    def _export(self, slug: str, email: str, amount: int, holder: int,
                key: str | None) -> None:
        jwk = jose.public_jwk(self.holders[(email, holder)])
        seen = None if key is None else self.books.export_keys.get((slug, email, key))
        kind, row = self._outcome("export", lambda: note_actions.export(
            self.session, slug=slug, email=email, amount=_money(amount), holder_jwk=jwk,
            actor=CLI, request_key=key))
        if seen is not None:
            same = seen[:2] == (amount, holder)
            assert kind == ("ok" if same else "conflict"), (kind, seen, amount, holder)
            if same:
                assert row.jti == seen[2]  # the same note, not a second one
            return
        if self.books.balance(slug, self.wallet(email)) < amount:
            assert kind == "insufficient"
            return
        assert kind == "ok" and row.amount == amount and row.state == "active"
        assert row.jti not in self.books.notes
        self.books.notes[row.jti] = MNote(row.jti, slug, email, amount, holder, row.token)
        if key is not None:
            self.books.export_keys[(slug, email, key)] = (amount, holder, row.jti)
        self.books.move(slug, self.wallet(email), "notes_outstanding", amount)

    @rule(org=st.integers(0, 1), who=st.integers(0, ENGINEERS - 1),
          amount=st.integers(1, 1500 * MICROS), holder=st.integers(0, 1),
          key=st.sampled_from([None, "x0", "x1"]))
    def export(self, org: int, who: int, amount: int, holder: int, key: str | None) -> None:
        self._export(self.slugs[org], self.emails[who], amount, holder, key)

    @rule(data=st.data())
    def replay_export(self, data: st.DataObject) -> None:
        """An export sent again: the same amount and key replay, others conflict."""
        if not self.books.export_keys:
            return
        (slug, email, key), (amount, holder, _jti) = data.draw(
            st.sampled_from(sorted(self.books.export_keys.items())))
        change = data.draw(st.sampled_from(["same", "same", "amount", "holder"]))
        self._export(slug, email, amount + (change == "amount"),
                     holder if change != "holder" else 1 - holder, key)

    def _pick_note(self, data: st.DataObject, *, active: bool = False) -> MNote | None:
        """A note of this example; with `active`, an active one when there is any."""
        # In the order they were made: their ids are random, and hypothesis must see the
        # same choices when it replays an example.
        pool = [jti for jti, n in self.books.notes.items() if n.state == "active" or not active]
        if not pool:
            pool = list(self.books.notes)
        return self.books.notes[data.draw(st.sampled_from(pool))] if pool else None

    @rule(data=st.data(), any_note=st.booleans())
    def revoke(self, data: st.DataObject, any_note: bool) -> None:
        note = self._pick_note(data, active=not any_note)
        if note is None:
            return
        kind, _row = self._outcome("revoke", lambda: note_actions.revoke(
            self.session, slug=note.issuer, jti=note.jti, reason="model", actor=CLI))
        if note.state != "active":
            assert kind == "refused"
            return
        assert kind == "ok"
        note.state = "revoked"
        self.books.move(note.issuer, "notes_outstanding", self.wallet(note.email), note.amount)

    # -- honour ------------------------------------------------------------------------

    def _present(self, note: MNote, verifier: str, nonce_value: str) -> str:
        return notes.present(note.token, holder_key=self.holders[(note.email, note.holder)],
                             audience=fs.issuer(verifier), nonce=nonce_value,
                             iat=clock.unix())  # the app's (fake) clock

    def _expect_honour(self, note: MNote, verifier: str,
                       presentations: list[str]) -> tuple[str, set[str]]:
        """What honouring `note` at `verifier` must do now.

        ("credit", {}): credited (and redeemed at the issuer unless it already was);
        ("redeem", codes): refused with one of `codes`, but redeemed at the issuer (its
        answer was lost); ("none", codes): refused with one of `codes`, nothing moves.
        The verifier may hold the issuer's status list from before a revocation, so a
        revoked note is refused by the verifier or, when asked, by the issuer.
        """
        if clock.unix() >= note.exp:
            return "none", {"expired"}  # the signed claims are checked first
        if clock.unix() - _presented_at(presentations) > notes.KB_MAX_AGE + notes.SKEW:
            return "none", {"holder_binding_failed"}  # a retry long after: present again
        if verifier == note.issuer:
            return "none", {"policy_rejected"}  # decided before any network call
        if note.state == "revoked":
            return "none", {"revoked"} | ({"issuer_unavailable"} if self.fault else set())
        if self.fault is not None:
            lost = self.fault == "lost_answer" and note.state == "active"
            return ("redeem" if lost else "none"), {"issuer_unavailable"}
        if note.credited:
            return "none", {"already_redeemed"}
        return "credit", set()  # active, or redeemed with its answer lost: answered again

    def _book_honour(self, note: MNote, verifier: str, expected: tuple[str, set[str]],
                     outcome: Any, available: int | None) -> None:
        """Check one outcome against the expectation and move the model's money."""
        effect, codes = expected
        Journeys.seen[f"honour {effect} {outcome.get('error', {}).get('code', '')}".strip()] += 1
        if effect == "credit":
            assert outcome["honoured"], outcome
            if note.state == "active":
                self._book_redeem(note, verifier)
            note.credited = True
            self.books.move(verifier, f"receivable:{fs.issuer(note.issuer)}",
                            self.wallet(note.email), note.amount)
            if available is not None:
                assert available == self.books.balance(verifier, self.wallet(note.email))
            return
        assert not outcome["honoured"], outcome
        assert outcome["error"]["code"] in codes, (codes, outcome)
        if effect == "redeem":
            self._book_redeem(note, verifier)

    def _book_redeem(self, note: MNote, verifier: str) -> None:
        note.state = "redeemed"
        self.books.move(note.issuer, "notes_outstanding", f"payable:{fs.issuer(verifier)}",
                        note.amount)

    def _honour(self, note: MNote, verifier: str, consumer: str,
                presentations: list[str], fault: str | None) -> None:
        self.fault = fault
        expected = self._expect_honour(note, verifier, presentations)
        result = honour_actions.honour(self.session, slug=verifier, email=note.email,
                            presentations=presentations, consumer=consumer)
        (outcome,) = result.outcomes
        self._book_honour(note, verifier, expected, outcome.as_json(),
                          result.balances.get("available") if outcome.honoured else None)

    @rule(data=st.data(), elsewhere=st.booleans(), fault=FAULTS)
    def honour(self, data: st.DataObject, elsewhere: bool, fault: str | None) -> None:
        note = self._pick_note(data)
        if note is None:
            return
        verifier = self.other(note.issuer) if elsewhere else note.issuer
        value = nonce_for(self.session, slug=verifier, person_id=self.pid[note.email])
        attempt = Attempt(verifier, note.email, note.jti, f"model:{uuid.uuid4().hex}",
                          [self._present(note, verifier, value)])
        self.books.attempts.append(attempt)
        self._honour(note, verifier, attempt.consumer, attempt.presentations, fault)

    @precondition(lambda self: bool(self.books.attempts))
    @rule(data=st.data(), fault=FAULTS)
    def retry_honour(self, data: st.DataObject, fault: str | None) -> None:
        """The same request again (same consumer, same presentation): e.g. after a fault."""
        attempt = data.draw(st.sampled_from(self.books.attempts))
        self._honour(self.books.notes[attempt.jti], attempt.verifier, attempt.consumer,
                     attempt.presentations, fault)

    @rule(data=st.data(), elsewhere=st.booleans(), fault=FAULTS)
    def honour_api(self, data: st.DataObject, elsewhere: bool, fault: str | None) -> None:
        """Honour through the API under a fresh Idempotency-Key."""
        note = self._pick_note(data)
        if note is None:
            return
        verifier = self.other(note.issuer) if elsewhere else note.issuer
        token = self.tokens[(verifier, note.email)]
        body = {"presentations": [self._present(
            note, verifier, api_nonce(self.client, slug=verifier, token=token))]}
        key = f"api-{uuid.uuid4().hex}"
        self._api(note, verifier, key, body, replay_of=None, fault=fault)

    @precondition(lambda self: bool(self.books.api_calls))
    @rule(data=st.data(), other_body=st.booleans(), fault=FAULTS)
    def replay_api(self, data: st.DataObject, other_body: bool, fault: str | None) -> None:
        """An API honour sent again with its key: same body, same answer; else a conflict.

        A 5xx answer is not stored (the key is released): sending that body again is a
        retry that runs, judged like any honour.
        """
        call = data.draw(st.sampled_from(self.books.api_calls))
        if other_body and call.status >= 500:
            return
        body = {"presentations": call.body["presentations"] * 2} if other_body else call.body
        self._api(self.books.notes[call.jti], call.verifier, call.key, body, replay_of=call,
                  fault=fault)

    def _api(self, note: MNote, verifier: str, key: str, body: dict[str, Any],
             replay_of: ApiCall | None, fault: str | None) -> None:
        stored = replay_of is not None and replay_of.status < 500
        self.fault = fault
        expected = self._expect_honour(note, verifier, body["presentations"])
        self.session.rollback()  # hold no transaction while the request runs
        answer = self.client.post(
            f"/api/v1/orgs/{verifier}/honour", json=body,
            headers={"Authorization": f"Bearer {self.tokens[(verifier, note.email)]}",
                     "Idempotency-Key": key})
        data = answer.get_json()
        if stored:
            assert replay_of is not None
            if body == replay_of.body:
                assert (answer.status_code, data) == (replay_of.status, replay_of.answer)
                assert answer.headers.get("Idempotent-Replayed") == "true"
            else:
                assert (answer.status_code, data["code"]) == (422, "idempotency_conflict")
            Journeys.seen[f"api replay {'same' if body == replay_of.body else 'other'} body"] += 1
            return
        assert "Idempotent-Replayed" not in answer.headers
        (outcome,) = data["results"]
        available = None
        if outcome["honoured"]:
            assert answer.status_code == 200, data
            whole, _, fraction = str(data["balance"]["available"]).partition(".")
            available = int(whole) * MICROS + int(fraction.ljust(6, "0"))
        else:
            unavailable = outcome["error"]["code"] == "issuer_unavailable"
            assert answer.status_code == (503 if unavailable else 422), data
            assert data["code"] == outcome["error"]["code"]
        self._book_honour(note, verifier, expected, outcome, available)
        if replay_of is not None:
            self.books.api_calls.remove(replay_of)
        self.books.api_calls.append(
            ApiCall(verifier, note.email, note.jti, key, body, answer.status_code, data))

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def database_equals_model(self) -> None:
        if not hasattr(self, "slugs"):
            return
        Journeys.checked += 1
        s = self.session
        s.rollback()
        for slug in self.slugs:
            rows = s.execute(sa.select(Account.name, Account.balance).where(
                Account.org_id == self.org_ids[slug], Account.currency == "USD")).all()
            held = {str(name): int(value) for name, value in rows}
            for name, value in held.items():
                assert value >= 0 or name.split(":")[0] in NEGATIVE_OK, (slug, name, value)
            expected = {name: v for (where, name), v in self.books.balances.items()
                        if where == slug and v}
            assert {n: v for n, v in held.items() if v} == expected, slug
        report = {slug: ledger_actions.check(s, slug=slug)[slug] for slug in self.slugs}
        assert report == {slug: [] for slug in self.slugs}, report
        states = dict(s.execute(sa.select(Note.jti, Note.state).where(
            Note.org_id.in_(list(self.org_ids.values())))).all())
        assert states == {jti: n.state for jti, n in self.books.notes.items()}
        redeemed = s.execute(sa.select(Redemption.note_id, sa.func.count()).where(
            Redemption.org_id.in_(list(self.org_ids.values())))
            .group_by(Redemption.note_id)).all()
        assert all(n == 1 for _id, n in redeemed)
        assert len(redeemed) == sum(n.state == "redeemed" for n in self.books.notes.values())
        honoured = s.execute(sa.select(HonouredNote.note_jti, sa.func.count()).where(
            HonouredNote.org_id.in_(list(self.org_ids.values())))
            .group_by(HonouredNote.note_jti)).all()
        assert all(n == 1 for _jti, n in honoured)
        assert {str(j) for j, _n in honoured} == {
            jti for jti, n in self.books.notes.items() if n.credited}
        s.rollback()


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """The test app's settings, with the per-address limit of the public endpoints lifted:
    a long run asks for more nonces a minute from 127.0.0.1 than a person would."""
    # The model knows the synchronous answers (503 when the issuer is unreachable);
    # pending honours have tests of their own (tests/test_pending_honours.py).
    return support.test_config(db_url, tmp_path, WALLET_PUBLIC_RATE_PER_MINUTE=10**9,
                               WALLET_AUTHENTICATED_RATE_PER_MINUTE=10**9,
                               WALLET_PENDING_HONOURS=False)


def _seed() -> int:
    """The run's seed: WALLET_MODEL_SEED, else --hypothesis-seed, else a fresh one."""
    given = os.environ.get("WALLET_MODEL_SEED", "").strip()
    if given:
        return int(given)
    forced = hypothesis.core.global_force_seed  # set by pytest --hypothesis-seed
    if forced is not None:
        return int(forced)
    return random.SystemRandom().randrange(2**32)


def test_random_journeys_match_the_model(app: Flask,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fs.clear_caches()
    seed = _seed()
    with capsys.disabled():
        print(f"\nmodel test: seed {seed} ({EXAMPLES} examples x {STEPS} steps);"
              f" replay with WALLET_MODEL_SEED={seed}")
    Journeys.app = app
    Journeys.seen.clear()
    Journeys.checked = 0
    machine = hypothesis.seed(seed)(Journeys)
    machine.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        print_blob=True, suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.filter_too_much])
    try:
        machine.TestCase().runTest()
    except BaseException:
        print(f"model test failed with seed {seed}: replay with WALLET_MODEL_SEED={seed}")
        raise
    finally:
        fs.clear_caches()
    with capsys.disabled():
        print(f"model test: {Journeys.checked} states checked against the database;"
              f" steps by outcome: {dict(sorted(Journeys.seen.items()))}")
