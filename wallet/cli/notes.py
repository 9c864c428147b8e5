"""`wallet note …`: export, inspect, verify and present credit notes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from sqlmodel import Session

from wallet import clock
from wallet.actions import notes as note_actions
from wallet.actions._base import Actor, org_or_404
from wallet.actions.verify import check_texts
from wallet.cli.base import (
    app_session,
    cli,
    confirm,
    discard_file,
    emit_json,
    info,
    json_option,
    org_option,
    publish_new_file,
    reserve_new_file,
    with_session,
    yes_option,
)
from wallet.cli.keys import ask_passphrase
from wallet.core import issuers, jose, notes, pkcs8, walletfile
from wallet.core.errors import Conflict, Malformed, NotFound, VerificationError, WalletError
from wallet.core.money import format_amount
from wallet.models import Note

MAX_INPUT = walletfile.MAX_BYTES


def read_input(path: str) -> str:
    """Read a note, presentation or wallet file ('-' for stdin), size-limited."""
    try:
        if path == "-":
            data = sys.stdin.read(MAX_INPUT + 1)
        else:
            with open(path, encoding="utf-8") as handle:
                data = handle.read(MAX_INPUT + 1)
    except UnicodeDecodeError:
        raise Malformed(f"{path} is not UTF-8 text (a note, presentation or wallet file"
                        " is)") from None
    except OSError as err:
        raise Malformed(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > MAX_INPUT:
        raise Malformed(f"{path} is larger than {MAX_INPUT} bytes")
    return data.strip()


def tokens_in(text: str, path: str) -> tuple[list[str], walletfile.WalletFile | None]:
    """The notes (or presentations) a file holds, and the wallet file if it is one: one
    item a line, a wallet file, or what `wallet note present` prints.

    Zero items is bad input, never an empty success: `verify && credit` must not accept
    a truncated download because nothing in it failed.
    """
    where = "standard input" if path == "-" else path
    presented = _presented(text, where)
    if presented is not None:
        items = presented
    elif walletfile.looks_like_wallet(text):
        wallet = walletfile.parse(text)
        if not wallet.notes:
            raise Malformed(f"{where}: the wallet file holds no notes")
        return wallet.notes, wallet
    else:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise Malformed(f"{where} holds no note or presentation (it is empty or blank)")
    return items, None


def _presented(text: str, where: str) -> list[str] | None:
    """The presentations of what `wallet note present` prints (`{"presentations": [...]}`),
    or None when `text` is something else (one item a line, a wallet file)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        found = json.loads(text)
    except ValueError:
        raise Malformed(f"{where} is neither one note a line nor JSON") from None
    if not isinstance(found, dict) or "presentations" not in found:
        return None  # a wallet file, or JSON the wallet file's parser refuses
    items = found["presentations"]
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise Malformed(f"{where} is JSON but not what 'wallet note present' writes"
                        ' ({"presentations": [...]})')
    return [i.strip() for i in items if i.strip()]


@cli.group()
def note() -> None:
    """Credit notes: export, inspect, verify, present, revoke."""


@note.command("export")
@org_option
@click.option("--email", required=True, help="Whose wallet the note is taken from.")
@click.option("--amount", required=True, help='Decimal amount, e.g. "1250.00".')
@click.option("--currency", default=None, help="ISO 4217 code (default: the organisation's).")
@click.option("--holder-jwk", "holder_file", required=True, type=click.Path(dir_okay=False),
              help="The holder's public JWK (as printed by 'wallet keys holder-new') or a"
                   " .ccwallet file.")
@click.option("--out", type=click.Path(), metavar="FILE",
              help="Write the note to this new file (mode 0600; never overwritten: an"
                   " existing FILE refuses the export before anything moves).")
@click.option("--idempotency-key", "request_key", metavar="KEY",
              help="Export at most once per person and KEY: a re-run with the same"
                   " arguments gives back the same note (and may write it to a new --out,"
                   " or find it already in FILE); other arguments are refused.")
@json_option
@with_session
def note_export(session: Session, slug: str, email: str, amount: str, currency: str | None,
                holder_file: str, out: str | None, request_key: str | None,
                as_json: bool) -> None:
    """Export part of an engineer's wallet as a note (operator and scripting path).

    The amount leaves the wallet when the note is made: keep the note. Give scripts an
    --idempotency-key so that a retry cannot export twice.
    """
    text = read_input(holder_file)
    if walletfile.looks_like_wallet(text) and '"format"' in text:
        jwk: Any = walletfile.parse(text).holder_jwk
    else:
        try:
            jwk = jose.json_value(text.encode())
        except WalletError:
            raise Malformed(f"{holder_file} is not a JSON JWK") from None

    def export() -> tuple[Note, bool]:
        return note_actions.export_once(session, slug=slug, email=email, amount=amount,
                                        currency=currency, holder_jwk=jwk, actor=Actor.cli(),
                                        request_key=request_key)

    if out == "-":
        raise click.BadParameter("give a file name (without --out the note is printed on"
                                 " stdout)", param_hint="--out")
    if out and request_key and os.path.lexists(out) and not os.path.isdir(out):
        row, created = _export_into_existing(session, export, out, slug=slug, email=email,
                                             request_key=request_key)
    elif out:
        # Reserved first: a FILE that exists or cannot be written refuses the export
        # while nothing has moved.
        temporary = reserve_new_file(out)
        try:
            row, created = export()
        except BaseException:
            discard_file(temporary)
            raise
        try:
            publish_new_file(temporary, out, (row.token + "\n").encode("ascii"))
        except OSError as err:
            click.echo(row.token)  # the amount has left the wallet: never lose the note
            again = (f"; re-run with --idempotency-key {request_key} to get it again"
                     if request_key else "")
            raise click.ClickException(
                f"note {row.jti} was exported but could not be written to {out}"
                f" ({err.strerror}); it is printed on stdout{again}") from None
    else:
        row, created = export()
    if as_json:
        emit_json({"jti": row.jti, "note": row.token, "amount": format_amount(row.amount),
                   "currency": row.currency, "expires_at": row.expires_at.isoformat(),
                   "created": created, "out": out})
    elif out and not created:
        info(f"Note {row.jti} ({format_amount(row.amount)} {row.currency}) was already"
             f" exported under this key; {out} holds it; nothing changed")
    elif out:
        info(f"Exported {format_amount(row.amount)} {row.currency} as note {row.jti} to {out}")
    else:
        click.echo(row.token)


def _export_into_existing(session: Session, export: Callable[[], tuple[Note, bool]],
                          out: str, *, slug: str, email: str,
                          request_key: str) -> tuple[Note, bool]:
    """A keyed re-run whose FILE exists: fine only if FILE holds the note this key made."""
    prior = note_actions.exported_for_key(session, slug=slug, email=email,
                                          request_key=request_key)
    try:
        held = read_input(out) if prior is not None else None
    except Malformed:
        held = None
    if prior is None or held != prior.token:
        raise click.BadParameter(f"{out} exists; files written here are never overwritten"
                                 " (choose another name, or move it away first)",
                                 param_hint="--out")
    row, created = export()  # a replay (the arguments are compared): nothing moves
    assert not created and row.jti == prior.jti
    return row, created


@note.command("inspect")
@click.argument("file")
def note_inspect(file: str) -> None:
    """Decode a note, presentation or wallet file WITHOUT verifying it."""
    items, wallet = tokens_in(read_input(file), file)
    try:
        decoded = [notes.decode(item) for item in items]
    except VerificationError as err:  # nothing is verified here: a bad token is bad input
        raise Malformed(f"{file} holds no note or presentation: {err.message}") from None
    if wallet is not None:
        emit_json({"format": walletfile.FORMAT, "holder_jwk": wallet.holder_jwk,
                   "holder_jkt": jose.thumbprint(wallet.holder_jwk),
                   "holder_key": "(encrypted)", "notes": decoded})
    else:
        emit_json(decoded[0] if len(decoded) == 1 else decoded)


def _print_report(index: int, total: int, report: dict[str, Any]) -> None:
    prefix = f"[{index + 1}/{total}] " if total > 1 else ""
    note_json = report.get("note") or {}
    verdict = "VALID" if report["valid"] else "INVALID"
    if note_json:
        amount = note_json.get("amount") or {}
        info(f"{prefix}{verdict}  {amount.get('value', '')} {amount.get('currency', '')}  "
             f"{note_json.get('jti', '')}  from {note_json.get('iss', '')}")
    else:  # nothing verified to name: say what failed instead of question marks
        info(f"{prefix}{verdict}  (not a note this could verify: see below)")
    for check in report["checks"]:
        mark = "ok " if check["ok"] is True else ("-- " if check["ok"] is None else "FAIL")
        info(f"    {mark} {check['name']}" + (f" ({check['note']})" if check.get("note") else ""))
    for error in report["errors"]:
        info(f"    {error['code']}: {error['message']}")


@note.command("verify")
@click.argument("file")
@click.option("--org", "slug", metavar="SLUG", help="Verify as this organisation would.")
@click.option("--jwks", "jwks_file", type=click.Path(dir_okay=False),
              help="Verify offline against the issuer's JWKS (status is not checked).")
@json_option
@click.pass_context
def note_verify(ctx: click.Context, file: str, slug: str | None, jwks_file: str | None,
                as_json: bool) -> int:
    """Verify notes or presentations; exit 0 when all are valid, 1 when one is not.

    FILE ('-' for stdin) holds one item a line, or is a .ccwallet. A file with no item
    (empty or blank: a truncated download) is bad input, exit 2: nothing checked is
    never success.
    """
    if bool(slug) == bool(jwks_file):
        raise click.UsageError("give exactly one of --org SLUG or --jwks FILE")
    items, _wallet = tokens_in(read_input(file), file)
    if jwks_file:
        reports = [_verify_offline(item, read_input(jwks_file)) for item in items]
    else:
        with app_session(ctx) as session:
            reports = _verify_online(session, slug or "", items)
    if as_json:
        emit_json(reports[0] if len(reports) == 1 else reports)
    else:
        for i, report in enumerate(reports):
            _print_report(i, len(reports), report)
    return 0 if all(r["valid"] for r in reports) else 1


def _verify_online(session: Session, slug: str, items: list[str]) -> list[dict[str, Any]]:
    return [r.as_json() for r in check_texts(session, slug=slug, texts=items)]


def _verify_offline(item: str, jwks_text: str) -> dict[str, Any]:
    checks: list[tuple[str, bool]] = []
    errors: list[dict[str, str]] = []
    note_json = None
    try:
        resolve = issuers.offline_keys(jwks_text)
    except WalletError as err:
        raise Malformed(f"the JWKS file: {err.message}") from None
    now = clock.unix()
    try:
        if notes.split(item)[1] is None:
            found = notes.verify(item, resolve=resolve, now=now, checks=checks)
        else:  # offline, the audience and nonce cannot be judged: take the KB-JWT's own
            aud = notes.decode(item)["kb_jwt"]["claims"].get("aud", "")
            found = notes.verify_presentation(item, resolve=resolve, audience=str(aud),
                                              now=now, checks=checks).note
        note_json = found.as_json()
    except VerificationError as err:
        errors.append(err.as_dict())
    report: dict[str, Any] = {
        "valid": not errors, "errors": errors,
        "checks": [_offline_check(n, ok) for n, ok in checks]
        + [{"name": "status", "ok": None, "note": "not checked offline"}],
        "note": note_json,
    }
    return report


def _offline_check(name: str, ok: bool) -> dict[str, Any]:
    """A check as the offline report shows it. Offline, nothing says the issuer is one
    to trust: only that the note names an issuer and a key of the JWKS given."""
    if name == "issuer_trusted" and ok:
        return {"name": name, "ok": None,
                "note": "not checked offline: the key is in the JWKS given; trust the note"
                        " as far as you trust that file"}
    return {"name": name, "ok": ok}


@note.command("present")
@click.argument("file")
@click.option("--key", "key_file", type=click.Path(dir_okay=False),
              help="The holder key file (when FILE is a bare note).")
@click.option("--audience", required=True, metavar="ISSUER_ID",
              help="The verifier's issuer id, e.g. https://…/orgs/globex.")
@click.option("--nonce", required=True, help="The nonce the verifier issued.")
@click.option("--passphrase-file", type=click.Path(dir_okay=False),
              help="File whose first line is the holder key's passphrase ('-': standard"
                   " input; else $WALLET_HOLDER_PASSPHRASE, else you are prompted).")
def note_present(file: str, key_file: str | None, audience: str, nonce: str,
                 passphrase_file: str | None) -> None:
    """Sign presentations of every note in FILE for one verifier; print JSON to send."""
    items, wallet = tokens_in(read_input(file), file)
    if wallet is None and not key_file:
        raise click.UsageError("a bare note needs --key KEYFILE (or pass a .ccwallet)")
    passphrase = ask_passphrase(passphrase_file, confirm=False)
    if key_file:
        key = pkcs8.decrypt(read_input(key_file).encode("ascii", "replace") + b"\n", passphrase)
    else:
        assert wallet is not None
        key = wallet.unlock(passphrase)
    holder_x = jose.public_jwk(key)["x"]
    now = clock.unix()
    presentations = []
    for item in items:
        claims = notes.decode(item)["claims"]
        if claims.get("cnf", {}).get("jwk", {}).get("x") != holder_x:
            raise Malformed(f"note {claims.get('jti', '?')} is bound to another holder key")
        presentations.append(notes.present(item, holder_key=key, audience=audience,
                                           nonce=nonce, iat=now))
    emit_json({"presentations": presentations})


@note.command("revoke")
@org_option
@click.option("--jti", required=True)
@click.option("--reason", required=True, help="Recorded with the note and in the audit log.")
@yes_option
@with_session
def note_revoke(session: Session, slug: str, jti: str, reason: str, yes: bool) -> None:
    """Revoke an active note; its value returns to the engineer's wallet (asks first)."""
    wanted = jti.strip()
    found = [v for v in note_actions.search(session, org=org_or_404(session, slug),
                                            query=wanted, limit=5) if v.row.jti == wanted]
    if not found:  # refused before anything is asked
        raise NotFound(f"{slug} issued no note {wanted!r}")
    if found[0].row.state != "active":
        raise Conflict(f"note {wanted} is {found[0].row.state}, not active")
    view = found[0]
    confirm(f"Revoke note {wanted} ({format_amount(view.row.amount)} {view.row.currency},"
            f" {view.person.email})? Whoever holds it can no longer use it anywhere; its"
            " value returns to the wallet", yes)
    row = note_actions.revoke(session, slug=slug, jti=jti, reason=reason, actor=Actor.cli())
    info(f"Revoked {row.jti}; {format_amount(row.amount)} {row.currency} back to the wallet")


@note.command("breakage")
@org_option
@click.option("--jti", required=True)
@with_session
def note_breakage(session: Session, slug: str, jti: str) -> None:
    """Book an expired, unredeemed note as breakage."""
    row = note_actions.breakage(session, slug=slug, jti=jti, actor=Actor.cli())
    info(f"Booked {row.jti} ({format_amount(row.amount)} {row.currency}) as breakage")
