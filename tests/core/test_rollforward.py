"""The roll-forward's arithmetic (wallet/core/rollforward.py): known answers and the
reconciliation property over random flows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wallet.core import rollforward as rf
from wallet.core.ledger import KINDS

M = 1_000_000

# Every transfer kind the code posts, with its accounts (docs/ledger.md, "Business
# events"; wallet/actions/holds.py for the hold legs).
POSTED = [
    ("fund", "external", "pool"), ("grant", "pool", "wallet"), ("grant", "pool", "unvested"),
    ("vest", "unvested", "wallet"), ("forfeit", "unvested", "pool"),
    ("spend", "wallet", "spent"), ("hold", "wallet", "held"), ("hold_release", "held", "wallet"),
    ("hold_capture", "held", "spent"), ("hold_extra", "wallet", "spent"),
    ("hold_overrun", "overrun", "spent"), ("export", "wallet", "notes_outstanding"),
    ("note_revoke", "notes_outstanding", "wallet"),
    ("note_reclaim", "notes_outstanding", "wallet"),
    ("note_breakage", "notes_outstanding", "breakage"),
    ("redeem", "notes_outstanding", "payable"), ("honour", "receivable", "wallet"),
    ("settle", "payable", "external"), ("settle", "external", "receivable"),
]


def test_a_month_known_answer() -> None:
    opening = {"pool": 900 * M, "unvested": 300 * M, "wallet": 200 * M, "notes_outstanding": 50 * M}
    flows = {
        ("fund", "external", "pool"): 1_000 * M,
        ("grant", "pool", "wallet"): 100 * M,
        ("grant", "pool", "unvested"): 400 * M,
        ("vest", "unvested", "wallet"): 150 * M,
        ("forfeit", "unvested", "pool"): 50 * M,
        ("spend", "wallet", "spent"): 30 * M,
        ("hold", "wallet", "held"): 20 * M,
        ("hold_capture", "held", "spent"): 15 * M,
        ("export", "wallet", "notes_outstanding"): 60 * M,
        ("redeem", "notes_outstanding", "payable"): 40 * M,
        ("settle", "payable", "external"): 25 * M,
        ("honour", "receivable", "wallet"): 10 * M,
        ("note_breakage", "notes_outstanding", "breakage"): 5 * M,
    }
    closing = {"pool": 1_450 * M, "unvested": 500 * M, "wallet": 350 * M, "held": 5 * M,
               "notes_outstanding": 65 * M, "payable": 15 * M}
    report = rf.roll_forward(currency="USD", opening=opening, flows=flows, closing=closing)

    assert report.reconciles
    assert report.opening.liability == 250 * M
    assert report.closing.liability == 435 * M
    liability = {line.name: line.change.liability for line in report.lines}
    assert liability == {
        "funded": 0, "granted": 100 * M, "vested": 150 * M, "forfeited": 0, "held": 0,
        "spent": -45 * M, "overrun": 0, "exported": 0, "revoked": 0, "reissued": 0,
        "breakage": -5 * M, "redeemed": 0, "honoured": 10 * M, "settled": -25 * M}
    assert report.line("granted").gross == 500 * M
    assert report.line("granted").change == rf.Position(pool=-500 * M, unvested=400 * M,
                                                        available=100 * M)
    assert report.line("held").change == rf.Position(available=-20 * M, held=20 * M)
    assert report.line("spent").change == rf.Position(available=-30 * M, held=-15 * M)
    assert report.line("redeemed").change == rf.Position(notes=-40 * M, payable=40 * M)
    assert report.movements.liability == 185 * M
    assert [line.name for line in report.lines][-1] == "settled"  # no "other" line


def test_a_settlement_received_moves_no_position() -> None:
    report = rf.roll_forward(currency="USD", opening={}, closing={},
                             flows={("settle", "external", "receivable"): 7 * M})
    assert report.reconciles
    assert report.line("settled").gross == 7 * M
    assert report.line("settled").change == rf.Position()


def test_an_unknown_kind_lands_on_other_and_still_reconciles() -> None:
    report = rf.roll_forward(currency="USD", opening={}, closing={"wallet": 3 * M},
                             flows={("gift", "external", "wallet"): 3 * M})
    assert report.reconciles
    other = report.line(rf.OTHER)
    assert other.kinds == ("gift",) and other.change.liability == 3 * M


def test_a_closing_that_disagrees_does_not_reconcile() -> None:
    report = rf.roll_forward(currency="USD", opening={"wallet": 10 * M}, closing={"wallet": 9 * M},
                             flows={("spend", "wallet", "spent"): 2 * M})
    assert not report.reconciles


def test_the_liability_is_the_finance_summary_s() -> None:
    p = rf.position({"wallet": 1, "held": 2, "notes_outstanding": 4, "payable": 8, "pool": 16,
                     "unvested": 32, "spent": 64, "receivable": -128})
    assert p.liability == 15
    assert p.as_dict() == {"pool": 16, "unvested": 32, "available": 1, "held": 2, "notes": 4,
                           "payable": 8, "liability": 15}


def test_every_column_is_an_account_kind() -> None:
    assert set(rf.COLUMNS.values()) <= KINDS


_amounts = st.integers(min_value=1, max_value=10**15)


@given(st.dictionaries(st.sampled_from(sorted(KINDS)), st.integers(-10**15, 10**15)),
       st.lists(st.tuples(st.sampled_from(POSTED), _amounts), max_size=40))
def test_opening_plus_movements_is_closing(opening: dict[str, int],
                                           transfers: list[tuple[tuple[str, str, str], int]]
                                           ) -> None:
    # The closing is computed independently: every transfer applied to the balances.
    closing = dict(opening)
    flows: dict[tuple[str, str, str], int] = {}
    for key, amount in transfers:
        _kind, source, destination = key
        closing[source] = closing.get(source, 0) - amount
        closing[destination] = closing.get(destination, 0) + amount
        flows[key] = flows.get(key, 0) + amount
    report = rf.roll_forward(currency="USD", opening=opening, flows=flows, closing=closing)
    assert report.reconciles
    assert report.opening.liability + report.movements.liability == report.closing.liability
    assert all(line.name != rf.OTHER for line in report.lines)
    assert sum(line.gross for line in report.lines) == sum(a for _k, a in transfers)
