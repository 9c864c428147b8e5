"""Bringing a wallet file: present every note it holds to this employer, and honour them.

The holder key is unlocked in memory with the engineer's passphrase, each note presented
for this organisation with a nonce bound to the engineer, and the presentations honoured
as any others (`wallet.actions.honour`). The passphrase and the decrypted key live only
for the call; nothing is stored.
"""

from __future__ import annotations

from sqlmodel import Session

from wallet import clock
from wallet.actions import nonces as nonce_actions
from wallet.actions import signing
from wallet.actions._base import member_or_404, org_or_404
from wallet.actions.honour import Honoured, honour
from wallet.core import notes, walletfile
from wallet.core.errors import Malformed


def bring_wallet(session: Session, *, slug: str, email: str, wallet_text: str,
                 passphrase: str, consumer: str) -> Honoured:
    """Honour every note of a wallet file for the engineer `email`."""
    org = org_or_404(session, slug)
    _m, person = member_or_404(session, org, email)
    wallet = walletfile.parse(wallet_text)
    if not wallet.notes:
        raise Malformed("the wallet file holds no notes")
    key = wallet.unlock(passphrase)
    nonce, _expires = nonce_actions.new_nonce(session, slug=org.slug, person_id=person.id)
    audience, now = signing.issuer_id(org), clock.unix()
    presentations = [notes.present(item, holder_key=key, audience=audience, nonce=nonce,
                                   iat=now) for item in wallet.notes]
    return honour(session, slug=slug, email=email, presentations=presentations,
                  consumer=consumer, org=org, person=person)
