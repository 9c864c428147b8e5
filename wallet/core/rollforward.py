"""The liability roll-forward: opening position + movements = closing position (issue 15).

What rolls is the organisation's **liability** as `wallet.actions.finance` defines it —
available (`wallet:*`) + held (`held:*`) + outstanding notes (`notes_outstanding`) +
payable (`payable:*`) — and, beside it, the two positions that feed it: the **unvested**
contingent liability (`unvested:*`: granted, owed only once it vests) and the **pool**
(`pool`: funded, not yet granted; the organisation's own money, owed to nobody). Each is
a column; each movement line says how much it moved each column, so a grant that vests
later shows as pool down and unvested up, and its vesting as unvested down and liability
up. Movements inside the liability (an export: wallet to notes; a hold: wallet to held;
a redemption elsewhere: notes to payable) change its parts but not its total.

Inputs are sums of transfers in micros, keyed by (transfer kind, source account kind,
destination account kind) — the shape `wallet.store.grants.flows` answers — and the
positions by account kind at the start and at the end of the range. Every flow is
booked, by its accounts, on some line (an unknown transfer kind on `other`), so
`reconciles` fails only if the three inputs disagree: opening, range and closing sums
that do not cover the same transfers, which is a bug in the ledger or its queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

# The account kinds each column sums (wallet.core.ledger names them).
COLUMNS: Mapping[str, str] = {
    "pool": "pool", "unvested": "unvested", "available": "wallet", "held": "held",
    "notes": "notes_outstanding", "payable": "payable",
}
_COLUMN_OF = {kind: column for column, kind in COLUMNS.items()}

# (line, label, transfer kinds it gathers), in the order a reader follows the credit.
LINES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("funded", "Funded", ("fund",)),
    ("granted", "Granted", ("grant",)),
    ("vested", "Vested", ("vest",)),
    ("forfeited", "Forfeited", ("forfeit",)),
    ("held", "Held (net change of holds)", ("hold", "hold_release")),
    ("spent", "Spent", ("spend", "hold_capture", "hold_extra")),
    ("overrun", "Overrun (absorbed)", ("hold_overrun",)),
    ("exported", "Exported (notes issued)", ("export",)),
    ("revoked", "Notes revoked", ("note_revoke",)),
    ("reissued", "Expired notes reclaimed for reissue", ("note_reclaim",)),
    ("breakage", "Reclaimed as breakage", ("note_breakage",)),
    ("redeemed", "Redeemed by others", ("redeem",)),
    ("honoured", "Honoured from others", ("honour",)),
    ("settled", "Settled", ("settle",)),
)
OTHER = "other"
_LINE_OF = {kind: name for name, _label, kinds in LINES for kind in kinds}

Flows = Mapping[tuple[str, str, str], int]


@dataclass(frozen=True, slots=True)
class Position:
    """Balances of the rolled positions, in micros (column names as in `COLUMNS`)."""

    pool: int = 0
    unvested: int = 0
    available: int = 0
    held: int = 0
    notes: int = 0
    payable: int = 0

    @property
    def liability(self) -> int:
        """What the organisation owes: available + held + outstanding notes + payable."""
        return self.available + self.held + self.notes + self.payable

    def __add__(self, other: Position) -> Position:
        return Position(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                           for f in fields(Position)})

    def as_dict(self) -> dict[str, int]:
        """The columns and the liability, by name."""
        values = {f.name: int(getattr(self, f.name)) for f in fields(Position)}
        return {**values, "liability": self.liability}


def position(balances: Mapping[str, int]) -> Position:
    """The position from balances summed per account kind (other kinds ignored)."""
    return Position(**{column: int(balances.get(kind, 0)) for column, kind in COLUMNS.items()})


@dataclass(frozen=True, slots=True)
class Line:
    """One movement line: what its transfers moved in total and their effect per column."""

    name: str
    label: str
    kinds: tuple[str, ...]
    gross: int  # the sum of the line's transfers, whatever accounts they joined
    change: Position


@dataclass(frozen=True, slots=True)
class RollForward:
    """Opening position, movement lines and closing position of one range and currency."""

    currency: str
    opening: Position
    lines: tuple[Line, ...]
    closing: Position

    @property
    def movements(self) -> Position:
        """The lines' changes added up."""
        total = Position()
        for line in self.lines:
            total = total + line.change
        return total

    @property
    def reconciles(self) -> bool:
        """Opening + movements = closing, in every column (so for the liability too)."""
        return self.opening + self.movements == self.closing

    def line(self, name: str) -> Line:
        """The line called `name` (KeyError if there is none)."""
        for found in self.lines:
            if found.name == name:
                return found
        raise KeyError(name)


def roll_forward(*, currency: str, opening: Mapping[str, int], flows: Flows,
                 closing: Mapping[str, int]) -> RollForward:
    """Build the roll-forward from balances by account kind at both ends and the range's
    transfer sums by (kind, source kind, destination kind)."""
    gross: dict[str, int] = {}
    change: dict[str, dict[str, int]] = {}
    for (kind, source, destination), amount in flows.items():
        name = _LINE_OF.get(kind, OTHER)
        gross[name] = gross.get(name, 0) + int(amount)
        moved = change.setdefault(name, {})
        if source in _COLUMN_OF:
            moved[_COLUMN_OF[source]] = moved.get(_COLUMN_OF[source], 0) - int(amount)
        if destination in _COLUMN_OF:
            moved[_COLUMN_OF[destination]] = moved.get(_COLUMN_OF[destination], 0) + int(amount)
    known = {kind for _name, _label, kinds in LINES for kind in kinds}
    others = tuple(sorted({kind for kind, _s, _d in flows if kind not in known}))
    specs = LINES + (((OTHER, "Other transfers", others),) if OTHER in gross else ())
    lines = tuple(Line(name, label, kinds, gross.get(name, 0), Position(**change.get(name, {})))
                  for name, label, kinds in specs)
    return RollForward(currency, position(opening), lines, position(closing))
