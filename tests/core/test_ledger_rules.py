"""Posting rules and the invariant checker, without a database."""

from __future__ import annotations

import pytest

from wallet.core import ledger
from wallet.core.ledger import AccountState, Posting, check_invariants


def test_account_names_and_negative_rule() -> None:
    assert ledger.wallet(7) == "wallet:7"
    assert ledger.unvested(7) == "unvested:7"
    assert ledger.kind_of("payable:https://b.example/orgs/b") == "payable"
    assert ledger.may_go_negative("external")
    assert ledger.may_go_negative("receivable:https://a.example/orgs/a")
    for name in ("pool", "wallet:1", "unvested:1", "notes_outstanding", "spent",
                 "payable:x", "breakage"):
        assert not ledger.may_go_negative(name)
    with pytest.raises(ValueError):
        ledger.kind_of("savings:1")


def test_posting_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Posting("pool", "wallet:1", 0, "USD", "grant", "k")
    with pytest.raises(ValueError):
        Posting("pool", "pool", 5, "USD", "grant", "k")
    with pytest.raises(ValueError):
        Posting("pool", "bogus:1", 5, "USD", "grant", "k")


def test_request_fingerprint_ignores_memo_only() -> None:
    a = Posting("external", "pool", 5, "USD", "fund", "k", memo="one")
    b = Posting("external", "pool", 5, "USD", "fund", "k", memo="two")
    c = Posting("external", "pool", 6, "USD", "fund", "k")
    assert ledger.fingerprint(a.request) == ledger.fingerprint(b.request)
    assert ledger.fingerprint(a.request) != ledger.fingerprint(c.request)


def _state(name: str, balance: int, cached: int | None = None,
           currency: str = "USD") -> AccountState:
    return AccountState(name, currency, balance if cached is None else cached, balance)


def test_sound_ledger_has_no_problems() -> None:
    accounts = [_state("external", -100), _state("pool", 60), _state("wallet:1", 30),
                _state("notes_outstanding", 10)]
    assert check_invariants(accounts, {"USD": 10}) == []


def test_each_invariant_is_reported() -> None:
    problems = check_invariants(
        [_state("external", -100), _state("pool", 120), _state("wallet:1", -20),
         _state("notes_outstanding", 5, cached=7)],
        {"USD": 9},
    )
    text = "\n".join(problems)
    assert "sum to 7, not zero" in text  # the cached balances are what must sum to zero
    assert "wallet:1 (USD) is negative: -20" in text
    assert "cached balance 7 differs from its transfers 5" in text
    assert "notes_outstanding (USD) is 5 but outstanding notes total 9" in text


def test_currencies_balance_separately() -> None:
    accounts = [_state("external", -5, currency="EUR"), _state("pool", 5, currency="USD")]
    problems = check_invariants(accounts, {})
    assert any("EUR sum to -5" in p for p in problems)
    assert any("USD sum to 5" in p for p in problems)
