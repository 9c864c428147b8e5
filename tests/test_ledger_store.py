"""The ledger on a real database: idempotency, overdraft refusal, invariants, races."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests import support
from wallet import db
from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs
from wallet.actions._base import Actor, commit
from wallet.core import ledger as rules
from wallet.core.errors import AmountInvalid, IdempotencyConflict, InsufficientFunds
from wallet.models import Transfer
from wallet.store import ledger

CLI = Actor.cli()


def _org(app: Flask, slug: str = "acme") -> int:
    with app.app_context():
        org, _ = orgs.create_org(db.session(), slug=slug, name=slug.title(),
                                 admin_email=f"admin@{slug}.test", actor=CLI,
                                 admin_password=support.PASSWORD)
        assert org.id is not None
        return org.id


def test_funding_moves_external_to_pool_once(app: Flask) -> None:
    org_id = _org(app)
    with app.app_context():
        s = db.session()
        first = ledger_actions.fund(s, slug="acme", amount="250000.00", idempotency_key="k1",
                                    actor=CLI)
        again = ledger_actions.fund(s, slug="acme", amount="250000.00", idempotency_key="k1",
                                    actor=CLI)
        assert first.created and not again.created
        assert again.transfer.id == first.transfer.id
        assert ledger.balance(s, org_id=org_id, name="pool", currency="USD") == 250_000_000_000
        assert ledger.balance(s, org_id=org_id, name="external", currency="USD") == -250_000_000_000
        with pytest.raises(IdempotencyConflict):
            ledger_actions.fund(s, slug="acme", amount="1.00", idempotency_key="k1", actor=CLI)
        assert s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0] == 1


@pytest.mark.parametrize("amount", ["-5", "0", "1.5e3", "12.1234567", "1000000000001", "NaN"])
def test_bad_amounts_move_nothing(app: Flask, amount: str) -> None:
    _org(app)
    with app.app_context():
        s = db.session()
        with pytest.raises(AmountInvalid):
            ledger_actions.fund(s, slug="acme", amount=amount, idempotency_key="k", actor=CLI)
        assert s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0] == 0


def test_overdraft_is_refused_and_leaves_no_transfer(app: Flask) -> None:
    org_id = _org(app)
    with app.app_context():
        s = db.session()
        ledger_actions.fund(s, slug="acme", amount="10.00", idempotency_key="f", actor=CLI)
        posting = rules.Posting("pool", "wallet:1", 10_000_001, "USD", "grant", "g1")
        with pytest.raises(InsufficientFunds):
            ledger.post(s, org_id=org_id, posting=posting)
        s.rollback()
        assert ledger.balance(s, org_id=org_id, name="pool", currency="USD") == 10_000_000
        # The refused key stays free: the same key with a fitting amount succeeds later.
        ok = rules.Posting("pool", "wallet:1", 10_000_000, "USD", "grant", "g1")
        posted = ledger.post(s, org_id=org_id, posting=ok)
        s.commit()
        assert posted.created and posted.balance == 10_000_000


@pytest.mark.parametrize("debit_first", [True, False], ids=["debit-first", "credit-first"])
def test_a_move_checks_the_debit_whichever_row_is_locked_first(app: Flask,
                                                               debit_first: bool) -> None:
    """Rows are updated in id order; on PostgreSQL the first update shares its statement
    with the transfer's INSERT. Either way an overdraft is refused and leaves nothing, and
    a fitting move answers the destination's new balance."""
    org_id = _org(app)
    payer, payee = ("wallet:1", "wallet:2") if debit_first else ("wallet:2", "wallet:1")
    with app.app_context():
        s = db.session()
        ledger_actions.fund(s, slug="acme", amount="20.00", idempotency_key="f", actor=CLI)
        for name in ("wallet:1", "wallet:2"):  # wallet:1 gets the lower account id
            ledger.post(s, org_id=org_id, posting=rules.Posting(
                "pool", name, 5_000_000, "USD", "grant", f"g-{name}"))
        s.commit()
        ids = {a.name: a.id for a in ledger.balances(s, org_id=org_id)}
        assert (ids[payer] < ids[payee]) is debit_first
        before = s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0]
        with pytest.raises(InsufficientFunds):
            ledger.post(s, org_id=org_id, posting=rules.Posting(
                payer, payee, 5_000_001, "USD", "spend", "too-much"))
        s.rollback()
        assert s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0] == before
        after = ledger.post(s, org_id=org_id, posting=rules.Posting(
            payer, payee, 2_000_000, "USD", "spend", "fits")).balance
        s.commit()
        assert after == 7_000_000
        assert ledger.balance(s, org_id=org_id, name=payer, currency="USD") == 3_000_000
        # The same key again moves nothing and says so.
        replay = ledger.post(s, org_id=org_id, posting=rules.Posting(
            payer, payee, 2_000_000, "USD", "spend", "fits"))
        assert not replay.created and replay.balance is None
        s.commit()
        assert ledger.balance(s, org_id=org_id, name=payee, currency="USD") == 7_000_000
    support.assert_ledger_sound(app)


def test_database_refuses_negative_balance_even_without_the_check(app: Flask) -> None:
    org_id = _org(app)
    with app.app_context():
        s = db.session()
        acc = ledger.account(s, org_id=org_id, name="pool", currency="USD")
        with pytest.raises(sa.exc.IntegrityError):
            s.execute(sa.text("UPDATE account SET balance = -1 WHERE id = :id"), {"id": acc.id})
            s.flush()
        s.rollback()


# -- the state machine: random funding / allocation / replays against a reference model ---


class LedgerMachine(RuleBasedStateMachine):
    """Random operations must match a dictionary model, and the invariants must hold."""

    app: Flask
    org_id: int

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, int] = {}
        self.requests: dict[str, tuple[str, str, int]] = {}
        self.ctx = self.app.app_context()
        self.ctx.push()
        self.session = db.session()

    def teardown(self) -> None:
        self.session.rollback()
        self.session.close()
        self.ctx.pop()

    @initialize()
    def fresh_org(self) -> None:
        # A fresh organisation per example keeps examples independent on one database.
        slug = f"o{len(LedgerMachine.created)}"
        LedgerMachine.created.append(slug)
        self.org_id = _org(self.app, slug)
        self.slug = slug

    created: list[str] = []

    def _post(self, source: str, dest: str, amount: int, key: str) -> str:
        posting = rules.Posting(source, dest, amount, "USD", "test", key)
        try:
            with ledger_actions.atomic(self.session):
                created = ledger.post(self.session, org_id=self.org_id, posting=posting).created
        except InsufficientFunds:
            return "insufficient"
        except IdempotencyConflict:
            return "conflict"
        return "created" if created else "replayed"

    def _expect(self, source: str, dest: str, amount: int, key: str) -> str:
        if key in self.requests:
            return "replayed" if self.requests[key] == (source, dest, amount) else "conflict"
        if not rules.may_go_negative(source) and self.model.get(source, 0) < amount:
            return "insufficient"
        self.requests[key] = (source, dest, amount)
        self.model[source] = self.model.get(source, 0) - amount
        self.model[dest] = self.model.get(dest, 0) + amount
        return "created"

    def _apply(self, source: str, dest: str, amount: int, key: str) -> None:
        expected = self._expect(source, dest, amount, key)
        assert self._post(source, dest, amount, key) == expected

    @rule(amount=st.integers(1, 10**12), key=st.sampled_from([f"f{i}" for i in range(6)]))
    def fund(self, amount: int, key: str) -> None:
        self._apply("external", "pool", amount, key)

    @rule(person=st.integers(1, 3), amount=st.integers(1, 10**11),
          key=st.sampled_from([f"a{i}" for i in range(6)]))
    def allocate(self, person: int, amount: int, key: str) -> None:
        self._apply("pool", rules.wallet(person), amount, key)

    @rule(person=st.integers(1, 3), amount=st.integers(1, 10**10),
          key=st.sampled_from([f"s{i}" for i in range(4)]))
    def spend(self, person: int, amount: int, key: str) -> None:
        self._apply(rules.wallet(person), "spent", amount, key)

    @rule(data=st.data())
    def replay_exactly(self, data: st.DataObject) -> None:
        if self.requests:
            key = data.draw(st.sampled_from(sorted(self.requests)))
            assert self._post(*self.requests[key], key) == "replayed"

    @rule(data=st.data(), delta=st.integers(1, 5))
    def replay_with_other_amount(self, data: st.DataObject, delta: int) -> None:
        if self.requests:
            key = data.draw(st.sampled_from(sorted(self.requests)))
            source, dest, amount = self.requests[key]
            before = dict(self.model)
            assert self._post(source, dest, amount + delta, key) == "conflict"
            assert self.model == before

    @invariant()
    def matches_model_and_invariants(self) -> None:
        if not hasattr(self, "org_id"):
            return
        for name, expected in self.model.items():
            assert ledger.balance(self.session, org_id=self.org_id, name=name,
                                  currency="USD") == expected
        states, outstanding = ledger.invariant_inputs(self.session, org_id=self.org_id)
        assert rules.check_invariants(states, outstanding) == []
        self.session.rollback()


def test_ledger_state_machine(app: Flask) -> None:
    LedgerMachine.app = app
    LedgerMachine.created = []
    test = LedgerMachine.TestCase
    test.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
    test().runTest()


# -- concurrency: one idempotency key, 32 requests, 2 processes -----------------------------


def _fund_many(args: tuple[dict[str, Any], int]) -> list[str]:
    from wallet import create_app

    config, threads = args
    app = create_app(config)
    outcomes: list[str] = []

    def one(_: int) -> str:
        with app.app_context():
            try:
                r = ledger_actions.fund(db.session(), slug="acme", amount="1000.00",
                                        idempotency_key="same-key", actor=CLI)
            except Exception as err:
                return f"error:{type(err).__name__}:{err}"
            return "created" if r.created else "replayed"

    try:
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(one, range(threads)))
    finally:
        app.extensions["wallet.engine"].dispose()
    return outcomes


@pytest.mark.slow
def test_32_concurrent_fundings_with_one_key_make_one_transfer(
        app: Flask, app_config: dict[str, Any]) -> None:
    org_id = _org(app)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_fund_many, [(app_config, 16), (app_config, 16)])
    outcomes = [o for batch in results for o in batch]
    assert len(outcomes) == 32
    assert outcomes.count("created") == 1, outcomes
    assert outcomes.count("replayed") == 31, outcomes
    with app.app_context():
        s = db.session()
        count = s.exec(sa.select(sa.func.count()).select_from(Transfer)
                       .where(Transfer.org_id == org_id)).one()[0]
        assert count == 1
        assert ledger.balance(s, org_id=org_id, name="pool", currency="USD") == 1_000_000_000


def _count_statements(app: Flask) -> list[str]:
    statements: list[str] = []
    sa.event.listen(app.extensions["wallet.engine"], "before_cursor_execute",
                    lambda _c, _cur, sql, *_a: statements.append(sql))
    return statements


def test_known_accounts_are_not_read_again(app: Flask) -> None:
    """A posting between accounts seen in a committed transaction reads no account row
    (ids are kept by the commit helper, `actions._base.commit`, once the transaction
    committed)."""
    org_id = _org(app)
    posting = rules.Posting("external", "pool", 1_000_000, "USD", "fund", "k-read-1")
    with app.app_context():
        s = db.session()
        ledger.post(s, org_id=org_id, posting=posting)
        commit(s)
        ledger.post(s, org_id=org_id, posting=rules.Posting(  # seen by a SELECT, committed
            "external", "pool", 1_000_000, "USD", "fund", "k-read-2"))
        commit(s)
        statements = _count_statements(app)
        ledger.post(s, org_id=org_id, posting=rules.Posting(
            "external", "pool", 1_000_000, "USD", "fund", "k-read-3"))
        commit(s)
        assert not [q for q in statements if q.lstrip().upper().startswith("SELECT")]
        # PostgreSQL: the transfer's INSERT and both updates are one statement.
        one_trip = db.engine().dialect.name == "postgresql"
        writes = [q for q in statements if not q.startswith("BEGIN")]
        assert len(writes) == (1 if one_trip else 3), statements
        assert ledger.balance(s, org_id=org_id, name="pool", currency="USD") == 3_000_000


@pytest.mark.parametrize("undo", ["rollback", "savepoint"])
def test_an_account_created_in_an_undone_transaction_is_not_remembered(
        app: Flask, undo: str) -> None:
    """Its id would point at no row: the next posting must create the account again."""
    org_id = _org(app)
    first = rules.Posting("external", "pool", 5_000_000, "USD", "fund", "k-undone-1")
    with app.app_context():
        s = db.session()
        if undo == "rollback":
            ledger.post(s, org_id=org_id, posting=first)
            ledger.post(s, org_id=org_id, posting=rules.Posting(  # reads the new rows back
                "external", "pool", 1_000_000, "USD", "fund", "k-undone-2"))
            s.rollback()
        else:
            savepoint = s.begin_nested()
            ledger.post(s, org_id=org_id, posting=first)
            ledger.post(s, org_id=org_id, posting=rules.Posting(
                "external", "pool", 1_000_000, "USD", "fund", "k-undone-2"))
            savepoint.rollback()
            commit(s)  # the outer transaction commits without the accounts
        assert s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0] == 0
        ledger.post(s, org_id=org_id, posting=rules.Posting(
            "external", "pool", 2_000_000, "USD", "fund", "k-undone-3"))
        commit(s)
        assert ledger.balance(s, org_id=org_id, name="pool", currency="USD") == 2_000_000


def test_a_deferred_debit_is_applied_at_commit_and_dropped_on_rollback(app: Flask) -> None:
    org_id = _org(app)
    with app.app_context():
        s = db.session()

        def receivable() -> int:
            return ledger.balance(s, org_id=org_id, name="receivable:https://a.example",
                                  currency="USD")

        def credit(key: str) -> int | None:
            return ledger.post(s, org_id=org_id, defer_debit=True, posting=rules.Posting(
                "receivable:https://a.example", "pool", 2_000_000, "USD", "honour", key)).balance

        assert credit("d-1") == 2_000_000  # the destination's balance comes back at once
        assert credit("d-1") is None  # the same key: recorded before, nothing moves
        s.rollback()
        assert s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0] == 0
        s.commit()  # nothing deferred survives the rollback
        assert receivable() == 0

        assert credit("d-2") == 2_000_000
        assert credit("d-3") == 4_000_000
        commit(s)  # the helper applies the debits inside the transaction
        assert receivable() == -4_000_000
        assert ledger.balance(s, org_id=org_id, name="pool", currency="USD") == 4_000_000
        s.commit()


def test_only_an_unchecked_debit_outside_savepoints_may_wait(app: Flask) -> None:
    org_id = _org(app)
    with app.app_context():
        s = db.session()
        with pytest.raises(ValueError):
            ledger.post(s, org_id=org_id, defer_debit=True, posting=rules.Posting(
                "pool", rules.wallet(1), 1, "USD", "grant", "w-1"))
        s.begin_nested()
        with pytest.raises(ValueError):
            ledger.post(s, org_id=org_id, defer_debit=True, posting=rules.Posting(
                "external", "pool", 1, "USD", "fund", "w-2"))
        s.rollback()


def test_a_commit_that_bypasses_the_helper_cannot_drop_a_deferred_debit(app: Flask) -> None:
    """Deferred debits are applied by the transaction helper (`atomic`, `commit`), not by
    a listener on every session: a bare COMMIT while one waits is refused, and nothing
    of that transaction lands (no transfer without its debit)."""
    from wallet.actions._base import atomic

    org_id = _org(app)
    with app.app_context():
        s = db.session()
        before = s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0]
        ledger.post(s, org_id=org_id, defer_debit=True, posting=rules.Posting(
            "receivable:https://a.example", "pool", 1_000_000, "USD", "honour", "bare-1"))
        with pytest.raises(RuntimeError, match="deferred ledger debit"):
            s.commit()
        s.rollback()
        assert s.exec(sa.select(sa.func.count()).select_from(Transfer)).one()[0] == before
        assert ledger.balance(s, org_id=org_id, name="pool", currency="USD") == 0
        with atomic(s):  # the helper: the debit lands with its transfer
            ledger.post(s, org_id=org_id, defer_debit=True, posting=rules.Posting(
                "receivable:https://a.example", "pool", 1_000_000, "USD", "honour", "bare-1"))
        s.commit()  # nothing waits any more: a plain commit is fine again
        assert ledger.balance(s, org_id=org_id, name="receivable:https://a.example",
                              currency="USD") == -1_000_000
    support.assert_ledger_sound(app)


def test_no_ledger_behaviour_rides_on_every_session() -> None:
    """The ledger registers no class-wide Session events (they ran for every session in
    the process, including ones that never touch the ledger)."""
    from sqlalchemy import event
    from sqlmodel import Session

    from wallet.store import ledger as store_ledger

    for name in ("before_commit", "after_commit", "after_rollback",
                 "after_transaction_end"):
        for fn in vars(store_ledger).values():
            if callable(fn):
                assert not event.contains(Session, name, fn), (name, fn)
