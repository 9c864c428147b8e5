"""The portable wallet file (`*.ccwallet`, docs/protocol.md §9 "The portable wallet file").

`{"format": "compute-credit-wallet/1", "holder_key": "<encrypted PKCS#8 PEM>",
"holder_jwk": {…public…}, "notes": ["<note>", …]}` — self-contained: it makes sense on a
machine that never saw the issuer. The holder key is encrypted under the engineer's
passphrase (PBES2, 600,000 PBKDF2 rounds); whoever produced the file keeps neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose, pkcs8
from wallet.core.errors import BadPassphrase, Malformed, WalletError

FORMAT = "compute-credit-wallet/1"
SUFFIX = ".ccwallet"
MAX_BYTES = 4 * 1024 * 1024
MAX_NOTES = 1000


@dataclass(frozen=True, slots=True)
class WalletFile:
    """A parsed wallet file."""

    holder_key: str
    holder_jwk: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialise for saving (pretty, stable)."""
        return json.dumps({"format": FORMAT, "holder_key": self.holder_key,
                           "holder_jwk": self.holder_jwk, "notes": self.notes}, indent=2) + "\n"

    def unlock(self, passphrase: str) -> Ed25519PrivateKey:
        """Decrypt the holder key, checking it matches `holder_jwk`."""
        key = pkcs8.decrypt(self.holder_key, passphrase)
        if jose.public_jwk(key)["x"] != self.holder_jwk.get("x"):
            raise BadPassphrase("the wallet's holder key does not match its holder_jwk")
        return key

    def with_notes(self, notes: list[str]) -> WalletFile:
        """A copy holding these notes."""
        return WalletFile(self.holder_key, self.holder_jwk, list(notes))


def create(key: Ed25519PrivateKey, passphrase: str, notes: list[str], *, salt: bytes,
           iv: bytes, rounds: int = pkcs8.HOLDER_ROUNDS) -> WalletFile:
    """Build a wallet file around a holder key and its notes."""
    pem = pkcs8.encrypt(key, passphrase, salt=salt, iv=iv, rounds=rounds).decode("ascii")
    return WalletFile(pem, jose.public_jwk(key), list(notes))


def parse(text: str | bytes) -> WalletFile:
    """Parse a wallet file strictly, or raise `Malformed` saying what is wrong."""
    if len(text) > MAX_BYTES:
        raise Malformed("the wallet file is larger than 4 MiB")
    try:
        data: Any = jose.json_object(text.encode("utf-8") if isinstance(text, str) else text)
    except WalletError:
        raise Malformed("the wallet file is not a JSON object") from None
    if data.get("format") != FORMAT:
        raise Malformed(f"the wallet file's format must be {FORMAT!r}")
    key, jwk, notes = data.get("holder_key"), data.get("holder_jwk"), data.get("notes", [])
    if not isinstance(key, str) or "ENCRYPTED PRIVATE KEY" not in key:
        raise Malformed("holder_key must be an encrypted PKCS#8 PEM")
    try:
        rounds = pkcs8.pbkdf2_rounds(key.encode("ascii", "replace"))
    except BadPassphrase as err:
        raise Malformed(f"holder_key: {err.message}") from None
    # Before anyone types a passphrase: the file must not choose an absurd cost.
    pkcs8.check_rounds(rounds)
    try:
        public = jose.PublicKey.from_jwk(jwk)
    except WalletError as err:
        raise Malformed(f"holder_jwk: {err.message}") from None
    if not isinstance(notes, list) or len(notes) > MAX_NOTES \
            or not all(isinstance(n, str) for n in notes):
        raise Malformed(f"notes must be a list of at most {MAX_NOTES} strings")
    return WalletFile(key, public.jwk, notes)


def looks_like_wallet(text: str) -> bool:
    """Tell a wallet file (JSON) from a bare note or presentation."""
    return text.lstrip().startswith("{")
