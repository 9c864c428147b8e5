"""Settlement statements between organisations, as pure functions (DESIGN §11.2).

The payer (the issuer A, who owes the verifier B for A's notes that B redeemed) sends B a
statement JWS signed with A's org key, as redeem requests are signed:

    header  {"alg": "EdDSA", "typ": "cc-settlement+jwt", "kid": <A's kid>}
    claims  {"iss": A, "aud": B, "jti": "urn:uuid:…", "iat": …,
             "amount": {"value", "currency"}, "direction": "pay" | "net",
             "through": <unix time> | "receipts": [<note jti>, …], "reference": "…",
             "offset": {"value", "currency"}}   (a "net" statement only)

A "net" statement is for when both owe each other: `offset` (what the payee owes the
payer) cancels against the payer's debt, and `amount` is paid on top.

B answers with an acknowledgement JWS signed by B's org key:

    header  {"alg": "EdDSA", "typ": "cc-settlement-ack+jwt", "kid": <B's kid>}
    claims  {"iss": B, "aud": A, "jti": "urn:uuid:…", "iat": …, "statement": <statement jti>,
             "digest": <statement content digest>, "amount": {"value", "currency"},
             "outstanding": {"value", "currency"}}

`outstanding` is what A still owes B after this payment, by B's own receipts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose, notes
from wallet.core.errors import (
    AudienceMismatch,
    IdempotencyConflict,
    MalformedToken,
    NotYetValid,
    PolicyRejected,
    TooLarge,
)
from wallet.core.money import Money, parse_currency, parse_money_json

STATEMENT_TYP = "cc-settlement+jwt"
ACK_TYP = "cc-settlement-ack+jwt"
# A statement whose acknowledgement was lost is sent again as it was: the payee answers a
# statement it has stored whatever its age, and accepts a new one for a day.
STATEMENT_MAX_AGE = 86_400
MAX_RECEIPTS = 100
MAX_REFERENCE = 200
DIRECTIONS = ("pay", "net")


@dataclass(frozen=True, slots=True)
class Statement:
    """A settlement statement's content (signed or verified)."""

    payer: str
    payee: str
    jti: str
    iat: int
    amount: Money
    reference: str
    direction: str = "pay"
    through: int | None = None
    receipts: tuple[str, ...] | None = None
    # direction "net": what the payee owes the payer, cancelled against the payer's debt
    # (each side books it payable -> receivable); `amount` is the money paid on top.
    offset: Money | None = None

    @property
    def settles(self) -> int:
        """How much of the payer's debt the statement settles: paid plus cancelled."""
        return self.amount.micros + (self.offset.micros if self.offset is not None else 0)

    def claims(self) -> dict[str, Any]:
        """The JWS claims, DESIGN §11.2."""
        out: dict[str, Any] = {"iss": self.payer, "aud": self.payee, "jti": self.jti,
                               "iat": self.iat, "amount": self.amount.as_json(),
                               "direction": self.direction, "reference": self.reference}
        if self.receipts is not None:
            out["receipts"] = list(self.receipts)
        else:
            out["through"] = self.through
        if self.offset is not None:
            out["offset"] = self.offset.as_json()
        return out

    def digest(self) -> str:
        """What makes two statements with one jti the same: every claim but `iat`
        (a payer may sign a lost statement again), canonical JSON, SHA-256, base64url."""
        content = {k: v for k, v in self.claims().items() if k != "iat"}
        raw = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()


def check_reference(reference: object) -> str:
    """A bank reference or invoice number: 1-200 printable characters."""
    if not isinstance(reference, str) or not reference.strip():
        raise MalformedToken("the statement needs a reference (bank reference or invoice)")
    text = reference.strip()
    if len(text) > MAX_REFERENCE or not text.isprintable():
        raise MalformedToken(f"the reference is at most {MAX_REFERENCE} printable characters")
    return text


def sign_statement(statement: Statement, *, kid: str, key: Ed25519PrivateKey) -> str:
    """Sign the payer's statement."""
    return jose.sign({"alg": jose.SIGNING_ALG, "typ": STATEMENT_TYP, "kid": kid},
                     statement.claims(), key)


def peek_payer(token: object) -> tuple[jose.Jws, str]:
    """Parse a statement enough to know who claims to send it (before choosing its key)."""
    jws = jose.parse(jose.check_size(token), typ=STATEMENT_TYP)
    iss = jws.payload.get("iss")
    if not isinstance(iss, str) or not iss:
        raise MalformedToken("the statement names no iss")
    return jws, iss


def read_statement(jws: jose.Jws, *, keys: notes.IssuerKeys, payee: str) -> Statement:
    """Verify a statement's signature with the payer's keys and read its claims (no
    freshness: `check_fresh` is for a statement not seen before)."""
    p = jws.payload
    iat = p.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise MalformedToken("the statement needs an integer iat")
    jws.verify(keys.for_token(jose.kid_of(jws), iat).key)
    if p.get("aud") != payee:
        raise AudienceMismatch("the statement is addressed to another organisation")
    jti = p.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 100:
        raise MalformedToken("the statement needs a jti")
    direction = p.get("direction")
    if direction not in DIRECTIONS:
        raise MalformedToken("direction must be 'pay' or 'net'")
    amount = parse_money_json(p.get("amount"))
    offset = None
    if direction == "net":
        if "offset" not in p:
            raise MalformedToken("a 'net' statement needs an offset")
        offset = parse_money_json(p["offset"])
        if offset.currency != amount.currency:
            raise MalformedToken("the offset must be in the amount's currency")
    elif "offset" in p:
        raise MalformedToken("only a 'net' statement has an offset")
    reference = check_reference(p.get("reference"))
    through, receipts = p.get("through"), p.get("receipts")
    if (through is None) == (receipts is None):
        raise MalformedToken("the statement names either receipts or a 'through' time")
    if receipts is not None:
        if (not isinstance(receipts, list) or not receipts
                or not all(isinstance(r, str) and 0 < len(r) <= 64 for r in receipts)
                or len(set(receipts)) != len(receipts)):
            raise MalformedToken("receipts must be a list of distinct note jtis")
        if len(receipts) > MAX_RECEIPTS:
            raise TooLarge(f"at most {MAX_RECEIPTS} receipts per statement")
        return Statement(str(p["iss"]), payee, jti, iat, amount, reference, direction,
                         receipts=tuple(receipts), offset=offset)
    if not isinstance(through, int) or isinstance(through, bool) or through < 0:
        raise MalformedToken("through must be a unix time")
    return Statement(str(p["iss"]), payee, jti, iat, amount, reference, direction,
                     through=through, offset=offset)


def check_fresh(statement: Statement, *, now: int) -> None:
    """A statement the payee has not stored yet must be recent."""
    if statement.iat > now + notes.SKEW:
        raise NotYetValid("the statement is dated in the future")
    if statement.iat < now - STATEMENT_MAX_AGE - notes.SKEW:
        raise MalformedToken("the statement is older than a day; send a new one")
    if statement.through is not None and statement.through > now + notes.SKEW:
        raise NotYetValid("the statement settles receipts through a time still to come")


def check_same(stored_digest: str, statement: Statement) -> None:
    """A statement sent again must be the one stored under its jti."""
    if stored_digest != statement.digest():
        raise IdempotencyConflict("a different statement was received with this jti")


def check_owed(amount: Money, *, outstanding: int, settles: int) -> None:
    """The payee's check: `amount` within what the payer owes by the payee's receipts.

    `outstanding` is all the payer owes now (receipts less payments received);
    `settles` what the statement's receipts come to, or, with a cut-off, what was owed
    through it. A payment is for no more than either."""
    limit = min(outstanding, settles)
    if amount.micros > limit:
        raise PolicyRejected(f"the statement pays {amount}; by our receipts"
                             f" {Money(max(limit, 0), amount.currency)} is owed")


def check_offset(statement: Statement, *, payee_owes: int) -> None:
    """The payee's check of a "net" statement: the offset within what it owes the payer."""
    offset = statement.offset
    if offset is not None and offset.micros > payee_owes:
        raise PolicyRejected(f"the statement nets {offset} we owe; by your receipts we owe"
                             f" {Money(max(payee_owes, 0), offset.currency)}")


def sign_ack(*, payee: str, payer: str, jti: str, iat: int, statement: Statement,
             outstanding: Money, kid: str, key: Ed25519PrivateKey) -> str:
    """Sign the payee's acknowledgement of a statement."""
    return jose.sign({"alg": jose.SIGNING_ALG, "typ": ACK_TYP, "kid": kid},
                     {"iss": payee, "aud": payer, "jti": jti, "iat": iat,
                      "statement": statement.jti, "digest": statement.digest(),
                      "amount": statement.amount.as_json(),
                      "outstanding": outstanding.as_json()}, key)


def read_balance(obj: object) -> Money:
    """A balance on the wire: an amount, or `"0.00"` (which an amount never is)."""
    if isinstance(obj, dict) and obj.keys() == {"value", "currency"} and obj["value"] == "0.00":
        return Money(0, parse_currency(obj["currency"]))
    return parse_money_json(obj)


@dataclass(frozen=True, slots=True)
class Ack:
    """A verified acknowledgement."""

    token: str
    jti: str
    iat: int
    statement: str
    outstanding: Money


def check_ack(token: object, *, keys: notes.IssuerKeys, statement: Statement) -> Ack:
    """Verify the payee's acknowledgement of `statement` as the payer."""
    jws = jose.parse(jose.check_size(token), typ=ACK_TYP)
    p: dict[str, Any] = jws.payload
    iat = p.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise MalformedToken("the acknowledgement needs an integer iat")
    jws.verify(keys.for_token(jose.kid_of(jws), iat).key)
    if p.get("iss") != statement.payee or p.get("aud") != statement.payer:
        raise MalformedToken("the acknowledgement is from or for another organisation")
    if p.get("statement") != statement.jti or p.get("digest") != statement.digest():
        raise MalformedToken("the acknowledgement is for another statement")
    if parse_money_json(p.get("amount")) != statement.amount:
        raise MalformedToken("the acknowledgement's amount differs from the statement's")
    left = read_balance(p.get("outstanding"))
    if left.currency != statement.amount.currency:
        raise MalformedToken("the acknowledgement's outstanding is in another currency")
    jti = p.get("jti")
    if not isinstance(jti, str) or not jti:
        raise MalformedToken("the acknowledgement needs a jti")
    return Ack(str(token), jti, iat, statement.jti, left)


# -- reconciling: one organisation's signed view of the pair -----------------------------

QUERY_TYP = "cc-settlement-query+jwt"
VIEW_TYP = "cc-settlement-view+jwt"
QUERY_MAX_AGE = 300


def sign_query(*, requester: str, responder: str, jti: str, iat: int, kid: str,
               key: Ed25519PrivateKey) -> str:
    """Sign the request for a counterparty's view of the pair (as redeem requests are)."""
    return jose.sign({"alg": jose.SIGNING_ALG, "typ": QUERY_TYP, "kid": kid},
                     {"iss": requester, "aud": responder, "jti": jti, "iat": iat}, key)


def peek_query(token: object) -> tuple[jose.Jws, str]:
    """Parse a view request enough to know who claims to send it."""
    jws = jose.parse(jose.check_size(token), typ=QUERY_TYP)
    iss = jws.payload.get("iss")
    if not isinstance(iss, str) or not iss:
        raise MalformedToken("the request names no iss")
    return jws, iss


def check_query(jws: jose.Jws, *, keys: notes.IssuerKeys, responder: str, now: int) -> str:
    """Verify a view request: signature, audience, freshness; the requester's id."""
    p = jws.payload
    iat = p.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise MalformedToken("the request needs an integer iat")
    jws.verify(keys.for_token(jose.kid_of(jws), iat).key)
    if p.get("aud") != responder:
        raise AudienceMismatch("the request is addressed to another organisation")
    if iat > now + notes.SKEW:
        raise NotYetValid("the request is dated in the future")
    if iat < now - QUERY_MAX_AGE - notes.SKEW:
        raise MalformedToken("the request is older than 5 minutes")
    return str(p["iss"])


def sign_view(view: dict[str, Any], *, responder: str, requester: str, jti: str, iat: int,
              kid: str, key: Ed25519PrivateKey) -> str:
    """Sign our view of the pair for the requester (`view`: see `differences`)."""
    return jose.sign({"alg": jose.SIGNING_ALG, "typ": VIEW_TYP, "kid": kid},
                     {**view, "iss": responder, "aud": requester, "jti": jti, "iat": iat}, key)


def read_view(token: object, *, keys: notes.IssuerKeys, responder: str,
              requester: str) -> dict[str, Any]:
    """Verify the counterparty's view of the pair and hand back its claims."""
    jws = jose.parse(jose.check_size(token), typ=VIEW_TYP)
    p: dict[str, Any] = jws.payload
    iat = p.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise MalformedToken("the view needs an integer iat")
    jws.verify(keys.for_token(jose.kid_of(jws), iat).key)
    if p.get("iss") != responder or p.get("aud") != requester:
        raise MalformedToken("the view is from or for another organisation")
    for member in ("they_redeemed", "we_honoured", "payments"):
        items = p.get(member)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise MalformedToken(f"the view's {member} must be a list of objects")
    return p


def _by(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {str(i.get(key)): i for i in items}


def differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Every difference between two organisations' views of their pair, in words.

    Each view is its author's: `they_redeemed` (our notes the other redeemed: receipts we
    signed), `we_honoured` (the other's notes we honoured: receipts it signed), `payments`
    (`{"statement", "way": paid|received, "amount", "reference", "acknowledged"}`) and
    `owed` (`{currency: {"we_owe", "they_owe"}}`, from its ledger). My
    `we_honoured` is their `they_redeemed`, and the other way round; my payment `paid` is
    their `received`."""
    found: list[str] = []
    for mine_key, theirs_key, what in (
            ("we_honoured", "they_redeemed", "a note of theirs we honoured"),
            ("they_redeemed", "we_honoured", "a note of ours they redeemed")):
        a, b = _by(mine[mine_key], "note"), _by(theirs[theirs_key], "note")
        for note in sorted(a.keys() - b.keys()):
            found.append(f"{what} ({note}, receipt {a[note].get('receipt')}): they have no"
                         " record of it")
        for note in sorted(b.keys() - a.keys()):
            found.append(f"{what} ({note}, receipt {b[note].get('receipt')}): only they"
                         " record it")
        for note in sorted(a.keys() & b.keys()):
            if (a[note].get("receipt"), a[note].get("amount")) != \
                    (b[note].get("receipt"), b[note].get("amount")):
                found.append(f"{what} ({note}): the receipt or amount differs")
    mine_owed, theirs_owed = mine.get("owed") or {}, theirs.get("owed") or {}
    if not isinstance(theirs_owed, dict):
        theirs_owed = {}
    for currency in sorted(set(mine_owed) | set(theirs_owed)):
        m, t = mine_owed.get(currency) or {}, theirs_owed.get(currency) or {}
        if not isinstance(t, dict):
            t = {}
        for ours, their, what in (("we_owe", "they_owe", "we owe them"),
                                  ("they_owe", "we_owe", "they owe us")):
            if m.get(ours, "0.00") != t.get(their, "0.00"):
                found.append(f"what {what} in {currency}: {m.get(ours, '0.00')} by our"
                             f" ledger, {t.get(their, '0.00')} by theirs")
    a, b = _by(mine["payments"], "statement"), _by(theirs["payments"], "statement")
    opposite = {"paid": "received", "received": "paid"}
    for jti in sorted(a.keys() - b.keys()):
        p = a[jti]
        found.append(f"a payment we {'sent' if p.get('way') == 'paid' else 'received'}"
                     f" ({jti}, {p.get('reference')}): they have no record of it")
    for jti in sorted(b.keys() - a.keys()):
        p = b[jti]
        found.append(f"a payment they {'sent' if p.get('way') == 'paid' else 'received'}"
                     f" ({jti}, {p.get('reference')}): we have no record of it")
    for jti in sorted(a.keys() & b.keys()):
        p, q = a[jti], b[jti]
        if opposite.get(str(p.get("way"))) != q.get("way") or any(
                p.get(k) != q.get(k) for k in ("amount", "offset", "reference")):
            found.append(f"the payment {jti}: the two records differ")
        elif not (p.get("acknowledged") and q.get("acknowledged")):
            found.append(f"the payment {jti} ({p.get('reference')}): not acknowledged yet")
    return found


# -- the statement of account of one pair ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountLine:
    """One movement of what two organisations owe each other, and where that left them:
    `balance` > 0 we owe them, < 0 they owe us (payable plus receivable, as the ledger
    keeps them)."""

    at: datetime
    kind: str  # redeem, honour, settle
    what: str  # "redeemed" | "honoured" | "paid" | "received" | "netted"
    ref: str
    amount: int
    balance: int


def account_lines(moves: Sequence[tuple[datetime, str, str, str, str, int]], *,
                  payable: str, receivable: str) -> list[AccountLine]:
    """The pair's movements (at, kind, source, destination, ref, amount; oldest first) with
    the running balance. A movement between the two accounts (a net statement's offset)
    cancels a debt each way and leaves the balance as it was."""
    pair, balance, lines = (payable, receivable), 0, []
    for at, kind, source, destination, ref, amount in moves:
        change = (amount if destination in pair else 0) - (amount if source in pair else 0)
        balance += change
        if source in pair and destination in pair:
            what = "netted"
        elif kind == "redeem":
            what = "redeemed"
        elif kind == "honour":
            what = "honoured"
        else:
            what = "paid" if source == payable else "received"
        lines.append(AccountLine(at, kind, what, ref, amount, balance))
    return lines
