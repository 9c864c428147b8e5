"""Signed balance statements: what an organisation attests an engineer holds, as of a day.

A statement is a compact JWS (`typ` `cc-statement+jwt`, EdDSA) signed with the
organisation's signing key, the key its notes are signed with, so anyone holding the
issuer's JWKS can check it offline, as a pay slip proves a salary. Its claims:

    {"iss": <issuer id>, "sub": <the engineer's email>, "name": <their name>,
     "jti": "urn:uuid:…", "iat": <unix>, "as_of": "YYYY-MM-DD", "currency": "USD",
     "grants": [{"id", "amount", "start_on", "cliff_months", "every", "months",
                 "tranches": [{"due_on", "amount", "state"}, …]}, …],
     "totals": {"granted", "vested", "unvested", "forfeited",
                "available", "held", "spent", "exported"}}

Amounts are decimal strings of the currency with two to six fraction digits (exact: no
micro is rounded away). `read` checks the signature with the issuer's keys and then that
the statement agrees with itself: each grant's tranches sum to the grant, and the
granted, vested, unvested and forfeited totals are the sums of the grants and tranches
listed. The other totals (`available`, `held`, `spent`, `exported`) are the ledger's
balances and flows for the engineer at that moment: signed, not derivable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose, notes
from wallet.core.errors import AmountInvalid, MalformedToken, NotYetValid
from wallet.core.money import format_amount, parse_amount, parse_currency

TYP = "cc-statement+jwt"
STATES = ("pending", "vested", "forfeited")
TOTALS = ("granted", "vested", "unvested", "forfeited", "available", "held", "spent",
          "exported")
MAX_GRANTS = 200  # a statement stays one token (16 KiB is the limit for every token)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class TrancheLine:
    due_on: date
    amount: int  # micros
    state: str  # pending, vested or forfeited


@dataclass(frozen=True, slots=True)
class GrantLine:
    id: int
    amount: int  # micros
    start_on: date
    cliff_months: int
    every: str | None  # None: immediate
    months: int
    tranches: tuple[TrancheLine, ...]


@dataclass(frozen=True, slots=True)
class Statement:
    """One engineer's holdings at one organisation, as of a day (micros throughout)."""

    issuer: str
    subject: str  # the engineer's email at the organisation
    name: str
    jti: str
    iat: int
    as_of: date
    currency: str
    grants: tuple[GrantLine, ...]
    available: int
    held: int
    spent: int
    exported: int

    @property
    def granted(self) -> int:
        return sum(g.amount for g in self.grants)

    def _in_state(self, state: str) -> int:
        return sum(t.amount for g in self.grants for t in g.tranches if t.state == state)

    @property
    def vested(self) -> int:
        return self._in_state("vested")

    @property
    def unvested(self) -> int:
        return self._in_state("pending")

    @property
    def forfeited(self) -> int:
        return self._in_state("forfeited")

    def totals(self) -> dict[str, int]:
        """Every total, by the claim's name."""
        return {name: int(getattr(self, name)) for name in TOTALS}

    def claims(self) -> dict[str, Any]:
        """The JWS payload."""
        return {
            "iss": self.issuer, "sub": self.subject, "name": self.name, "jti": self.jti,
            "iat": self.iat, "as_of": self.as_of.isoformat(), "currency": self.currency,
            "grants": [{
                "id": g.id, "amount": format_amount(g.amount),
                "start_on": g.start_on.isoformat(), "cliff_months": g.cliff_months,
                "every": g.every, "months": g.months,
                "tranches": [{"due_on": t.due_on.isoformat(), "amount": format_amount(t.amount),
                              "state": t.state} for t in g.tranches],
            } for g in self.grants],
            "totals": {name: format_amount(value) for name, value in self.totals().items()},
        }


def sign(statement: Statement, *, kid: str, key: Ed25519PrivateKey) -> str:
    """The statement as a compact JWS signed with the organisation's key `kid`."""
    if len(statement.grants) > MAX_GRANTS:
        raise MalformedToken(f"a statement lists at most {MAX_GRANTS} grants")
    return jose.sign({"alg": jose.SIGNING_ALG, "typ": TYP, "kid": kid}, statement.claims(), key)


def read(token: object, *, resolve: Callable[[str], notes.IssuerKeys], now: int,
         checks: list[tuple[str, bool]] | None = None) -> Statement:
    """Verify a statement: its form, its signature with the keys `resolve(iss)` gives,
    its date, and that it agrees with itself; raise a `VerificationError` saying what
    failed. Each check passed is appended to `checks` (name, True)."""
    done = checks if checks is not None else []
    jws = jose.parse(jose.check_size(token), typ=TYP)
    p = jws.payload
    issuer, iat = p.get("iss"), p.get("iat")
    if not isinstance(issuer, str) or not issuer:
        raise MalformedToken("the statement names no iss")
    if type(iat) is not int:
        raise MalformedToken("the statement needs an integer iat")
    done.append(("format", True))
    jws.verify(resolve(issuer).for_token(jose.kid_of(jws), iat).key)
    done.append(("signature", True))
    if iat > now + notes.SKEW:
        raise NotYetValid("the statement is dated in the future")
    done.append(("issued", True))
    statement = _parse(p, issuer, iat)
    totals = p["totals"]
    for name, value in statement.totals().items():
        if name in ("granted", "vested", "unvested", "forfeited") and \
                micros_of(totals.get(name), f"totals.{name}") != value:
            raise MalformedToken(f"totals.{name} is not the sum of the grants listed")
    done.append(("totals", True))
    return statement


def _parse(p: Mapping[str, Any], issuer: str, iat: int) -> Statement:
    subject, name, jti = p.get("sub"), p.get("name", ""), p.get("jti")
    if not isinstance(subject, str) or not subject or not isinstance(name, str):
        raise MalformedToken("the statement needs a sub (the engineer) and a string name")
    if not isinstance(jti, str) or not jti or len(jti) > 100:
        raise MalformedToken("the statement needs a jti")
    currency = p.get("currency")
    try:
        parse_currency(currency)
    except AmountInvalid:
        raise MalformedToken("the statement's currency is not an ISO 4217 code") from None
    grants, totals = p.get("grants"), p.get("totals")
    if not isinstance(grants, list) or len(grants) > MAX_GRANTS:
        raise MalformedToken(f"grants must be a list of at most {MAX_GRANTS}")
    if not isinstance(totals, dict) or set(totals) != set(TOTALS):
        raise MalformedToken("totals must name exactly: " + ", ".join(TOTALS))
    return Statement(
        issuer=issuer, subject=subject, name=name, jti=jti, iat=iat,
        as_of=_day(p.get("as_of"), "as_of"), currency=str(currency),
        grants=tuple(_grant(g, i) for i, g in enumerate(grants)),
        available=micros_of(totals["available"], "totals.available"),
        held=micros_of(totals["held"], "totals.held"),
        spent=micros_of(totals["spent"], "totals.spent"),
        exported=micros_of(totals["exported"], "totals.exported"))


def _grant(g: object, i: int) -> GrantLine:
    where = f"grants[{i}]"
    if not isinstance(g, dict):
        raise MalformedToken(f"{where} must be an object")
    ident, cliff, months, every = g.get("id"), g.get("cliff_months"), g.get("months"), \
        g.get("every")
    if type(ident) is not int or type(cliff) is not int or type(months) is not int:
        raise MalformedToken(f"{where}: id, cliff_months and months must be integers")
    if every not in (None, "month", "quarter"):
        raise MalformedToken(f"{where}.every must be null, month or quarter")
    parts = g.get("tranches")
    if not isinstance(parts, list) or not parts:
        raise MalformedToken(f"{where}.tranches must be a non-empty list")
    line = GrantLine(ident, micros_of(g.get("amount"), f"{where}.amount"),
                     _day(g.get("start_on"), f"{where}.start_on"), cliff, every, months,
                     tuple(_tranche(t, f"{where}.tranches[{j}]") for j, t in enumerate(parts)))
    if sum(t.amount for t in line.tranches) != line.amount:
        raise MalformedToken(f"{where}: the tranches do not sum to the grant")
    return line


def _tranche(t: object, where: str) -> TrancheLine:
    if not isinstance(t, dict) or t.get("state") not in STATES:
        raise MalformedToken(f"{where} must be an object with a state of "
                             + ", ".join(STATES))
    return TrancheLine(_day(t.get("due_on"), f"{where}.due_on"),
                       micros_of(t.get("amount"), f"{where}.amount"), str(t["state"]))


def micros_of(value: object, where: str = "amount") -> int:
    """A non-negative decimal amount in micros (`format_amount`'s form), or
    `MalformedToken` naming `where`."""
    if value == format_amount(0):
        return 0
    try:
        return parse_amount(value)
    except AmountInvalid:
        raise MalformedToken(f"{where} must be a decimal amount such as \"12.50\"") from None


def _day(value: object, where: str) -> date:
    if not isinstance(value, str) or _DAY.fullmatch(value) is None:
        raise MalformedToken(f"{where} must be a date such as 2026-01-31")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise MalformedToken(f"{where} must be a date such as 2026-01-31") from None


def lines(grants: Sequence[tuple[int, int, date, int, str | None, int]],
          tranches: Sequence[tuple[int, date, int, str]]) -> tuple[GrantLine, ...]:
    """Grant lines from rows: grants (id, amount, start_on, cliff_months, every, months)
    and tranches (grant id, due_on, amount, state), in the order given."""
    by_grant: dict[int, list[TrancheLine]] = {}
    for grant_id, due_on, amount, state in tranches:
        by_grant.setdefault(grant_id, []).append(TrancheLine(due_on, amount, state))
    return tuple(GrantLine(gid, amount, start, cliff, every, months,
                           tuple(by_grant.get(gid, ())))
                 for gid, amount, start, cliff, every, months in grants)
