"""`wallet keys …`: organisation signing keys and engineers' holder keys."""

from __future__ import annotations

import json
import os
import secrets
import sys

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from wallet.actions import keys as key_actions
from wallet.actions._base import Actor, org_or_404, parse_moment
from wallet.cli.base import (
    cli,
    confirm,
    discard_file,
    emit_json,
    info,
    json_option,
    org_option,
    publish_new_file,
    read_secret_file,
    reserve_new_file,
    with_session,
    yes_option,
)
from wallet.core import jose, pkcs8
from wallet.core.errors import Malformed
from wallet.models import SigningKey


@cli.group()
def keys() -> None:
    """Signing keys (organisations) and holder keys (engineers)."""


def _row(row: SigningKey) -> dict[str, object]:
    return {
        "kid": row.kid, "state": row.state, "created_at": row.created_at.isoformat(),
        "retired_at": row.retired_at.isoformat() if row.retired_at else None,
        "compromised_at": row.compromised_at.isoformat() if row.compromised_at else None,
        "fingerprint": key_actions.fingerprint(row.public_jwk), "storage": row.storage,
    }


@keys.command("generate")
@org_option
@json_option
@with_session
def keys_generate(session: Session, slug: str, as_json: bool) -> None:
    """Create the organisation's first signing key."""
    change = key_actions.generate(session, slug=slug, actor=Actor.cli())
    if as_json:
        emit_json(_row(change.key))
    else:
        info(f"Generated active key {change.key.kid} for {slug}")
        info(f"  fingerprint {key_actions.fingerprint(change.key.public_jwk)}")


@keys.command("list")
@org_option
@json_option
@with_session
def keys_list(session: Session, slug: str, as_json: bool) -> None:
    """List keys: kid, state, created, fingerprint."""
    rows = key_actions.listing(session, slug=slug)
    if as_json:
        emit_json([_row(r) for r in rows])
        return
    if not rows:
        info(f"{slug} has no keys; run 'wallet keys generate --org {slug}'")
    for r in rows:
        extra = f" compromised {r.compromised_at.isoformat()}" if r.compromised_at else ""
        info(f"{r.kid}  {r.state:<8} {r.created_at:%Y-%m-%d %H:%M}  "
             f"{key_actions.fingerprint(r.public_jwk)}{extra}")


@keys.command("rotate")
@org_option
@yes_option
@json_option
@with_session
def keys_rotate(session: Session, slug: str, yes: bool, as_json: bool) -> None:
    """Make a new active key; the old one is retired and keeps verifying (asks first)."""
    active = next((r for r in key_actions.listing(session, slug=slug) if r.state == "active"),
                  None)
    if active is not None:
        confirm(f"Retire {slug}'s active key {active.kid} and make a new one? The old key"
                " then only verifies what it signed", yes)
    change = key_actions.rotate(session, slug=slug, actor=Actor.cli())
    if as_json:
        emit_json({"active": _row(change.key),
                   "retired": _row(change.retired) if change.retired else None})
        return
    info(f"New active key {change.key.kid}")
    if change.retired:
        info(f"Retired {change.retired.kid} (still verifies what it signed)")


# A kid is base64url and may start with "-": unknown "options" are taken as the KID, and
# this command has no short options at all (not even -h or -y), so none can match inside
# a kid.
@keys.command("revoke", context_settings={"ignore_unknown_options": True,
                                          "help_option_names": ["--help"]})
@org_option
@click.argument("kid")
@click.option("--compromised-at", required=True, metavar="TIME",
              help="When the key was compromised (ISO 8601 with timezone, or 'now').")
@click.option("--reason", default="", help="Recorded in the audit log.")
@click.option("--rotate", "rotate", is_flag=True,
              help="Make a new active key in the same step (needed to revoke the active"
                   " key: an organisation is never left without a signing key).")
@click.option("--yes", "yes", is_flag=True,
              help="Do it without asking (needed when stdin is not a terminal).")
@json_option
@with_session
def keys_revoke(session: Session, slug: str, kid: str, compromised_at: str, reason: str,
                rotate: bool, yes: bool, as_json: bool) -> None:
    """Revoke a compromised key: tokens it signed at or after TIME become invalid.

    Our own notes it signed since TIME are revoked and their value returns to the
    engineers' wallets. The active key can only be revoked together with --rotate
    (rotate-then-revoke, one transaction). Asks first; --yes in scripts.
    """
    moment = parse_moment(compromised_at, "--compromised-at")
    row = key_actions.revocable(session, slug=slug, kid=kid, replace=rotate)
    what = ("the active key" if row.state == "active" else f"a {row.state} key")
    confirm(f"Revoke {kid} ({what} of {slug}) as compromised at {moment.isoformat()}?"
            " Everything it signed since then becomes invalid everywhere"
            + ("; a new active key is made in the same step" if rotate else ""), yes)
    change = key_actions.revoke(session, slug=slug, kid=kid, compromised_at=moment,
                                actor=Actor.cli(), reason=reason, replace=rotate)
    if as_json:
        emit_json({**_row(change.key), "notes_revoked": change.notes_revoked,
                   "replacement": _row(change.replacement) if change.replacement else None,
                   "retired": _row(change.retired) if change.retired else None})
        return
    info(f"Revoked {kid} as compromised at {change.key.compromised_at.isoformat()}"  # type: ignore[union-attr]
         f"; {change.notes_revoked} note(s) it signed since were revoked")
    if change.retired:
        info(f"Retired {change.retired.kid} (still verifies what it signed)")
    if change.replacement:
        info(f"New active key {change.replacement.kid}")
    elif all(r.state != "active" for r in key_actions.listing(session, slug=slug)):
        info(f"{slug} has no active key: run 'wallet keys rotate --org {slug}'")


@keys.command("export-jwks")
@org_option
@with_session
def keys_export_jwks(session: Session, slug: str) -> None:
    """Print the public JWKS (active and retired keys)."""
    emit_json(key_actions.jwks(session, org=org_or_404(session, slug)))


PASSPHRASE_ENV = "WALLET_HOLDER_PASSPHRASE"  # noqa: S105 (the variable's name)


def ask_passphrase(passphrase_file: str | None, *, confirm: bool) -> str:
    """A holder key's passphrase: from a file (or standard input, '-'), else from
    $WALLET_HOLDER_PASSPHRASE, else typed at a terminal (twice when creating)."""
    if passphrase_file:
        return read_secret_file(passphrase_file)
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():  # a pipe or /dev/null: nobody to ask, and no echo control
        raise click.UsageError("no terminal to ask for the passphrase on; give"
                               f" --passphrase-file FILE ('-': standard input) or set"
                               f" {PASSPHRASE_ENV}")
    value: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm,
                              err=True)
    return value


@keys.command("holder-new")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the encrypted key (never overwritten).")
@click.option("--passphrase-file", type=click.Path(dir_okay=False),
              help="File whose first line is the passphrase ('-': standard input; else"
                   " $WALLET_HOLDER_PASSPHRASE, else you are prompted).")
def keys_holder_new(out: str, passphrase_file: str | None) -> None:
    """Create an engineer's holder key, encrypted under a passphrase; print its public JWK."""
    temporary = reserve_new_file(out)  # an unusable --out is refused before the prompt
    try:
        passphrase = ask_passphrase(passphrase_file, confirm=True)
        if len(passphrase) < 8:
            raise Malformed("use a passphrase of at least 8 characters")
        key = Ed25519PrivateKey.generate()
        pem = pkcs8.encrypt(key, passphrase, salt=secrets.token_bytes(16),
                            iv=secrets.token_bytes(16))
        publish_new_file(temporary, out, pem)
    except OSError as err:
        raise Malformed(f"cannot write {out}: {err.strerror}") from None
    finally:
        discard_file(temporary)
    jwk = jose.public_jwk(key)
    click.echo(json.dumps({**jwk, "kid": jose.thumbprint(jwk)}))
    click.echo(f"(holder key written to {out}, mode 0600; keep the passphrase safe)", err=True)
