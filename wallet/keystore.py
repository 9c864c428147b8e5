"""Organisation signing keys, encrypted at rest: in the keystore folder or the database.

Files: `<keystore>/<org slug>/<kid>.key.pem` (encrypted PKCS#8, mode 0600, written once,
never overwritten) next to `<kid>.jwk.json` (the public JWK). With
`WALLET_KEY_STORAGE=db` the same encrypted PEM lives in the `signing_key` row instead.
Either way the PEM is encrypted under `WALLET_KEY_PASSPHRASE`. Decrypted keys are
cached per process; they never appear in logs, errors or responses.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app

from wallet.core import jose, pkcs8
from wallet.core.errors import BadPassphrase, KeyUnavailable
from wallet.models import SigningKey

# The passphrase is 64 random characters (or an operator's 32+ in production), so a
# moderate PBKDF2 cost suffices; the key is decrypted once per process.
ORG_KEY_ROUNDS = 100_000


class Keystore:
    """Encrypts, stores and loads organisation private keys."""

    def __init__(self, *, folder: str | Path, passphrase: str, storage: str = "file") -> None:
        if storage not in ("file", "db"):
            raise KeyUnavailable("WALLET_KEY_STORAGE must be 'file' or 'db'")
        self.folder = Path(folder)
        self.storage = storage
        self._passphrase = passphrase
        self._cache: dict[tuple[int, str], Ed25519PrivateKey] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the passphrase
        return f"Keystore(folder={str(self.folder)!r}, storage={self.storage!r})"

    def seal(self, key: Ed25519PrivateKey) -> bytes:
        """Encrypt a private key under the keystore passphrase."""
        return pkcs8.encrypt(key, self._passphrase, salt=secrets.token_bytes(16),
                             iv=secrets.token_bytes(16), rounds=ORG_KEY_ROUNDS)

    def save(self, *, org_slug: str, kid: str, key: Ed25519PrivateKey) -> str | None:
        """Store a new key; return the encrypted PEM when it belongs in the database."""
        pem = self.seal(key)
        if self.storage == "db":
            return pem.decode("ascii")
        directory = self.folder / org_slug
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{kid}.key.pem"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyUnavailable(f"refusing to overwrite existing key file {path}") from None
        except OSError as err:
            raise KeyUnavailable(
                f"cannot write to the keystore {directory}: {err.strerror}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public = directory / f"{kid}.jwk.json"
        public.write_text(json.dumps({**jose.public_jwk(key), "kid": kid}, indent=2) + "\n")
        return None

    def load(self, row: SigningKey, *, org_slug: str) -> Ed25519PrivateKey:
        """Return the private key of a signing-key row (decrypted once per process)."""
        assert row.org_id is not None
        cache_key = (row.org_id, row.kid)
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        if row.storage == "db":
            if not row.encrypted_pem:
                raise KeyUnavailable(f"key {row.kid} has no private part in the database")
            pem = row.encrypted_pem.encode("ascii")
            where = "the database"
        else:
            path = self.folder / org_slug / f"{row.kid}.key.pem"
            where = str(path)
            try:
                pem = path.read_bytes()
            except FileNotFoundError:
                raise KeyUnavailable(
                    f"private key {row.kid} is missing from the keystore ({where});"
                    " check WALLET_KEYSTORE") from None
            except OSError as err:
                raise KeyUnavailable(f"cannot read {where}: {err.strerror}") from None
        try:
            key = pkcs8.decrypt(pem, self._passphrase)
        except BadPassphrase:
            raise KeyUnavailable(
                f"cannot decrypt private key {row.kid} from {where}: wrong"
                " WALLET_KEY_PASSPHRASE or a damaged key") from None
        if jose.thumbprint(jose.public_jwk(key)) != row.kid:
            raise KeyUnavailable(f"the private key stored for {row.kid} does not match it")
        with self._lock:
            self._cache[cache_key] = key
        return key


def keystore() -> Keystore:
    """Return the current app's keystore."""
    found = current_app.extensions.get("wallet.keystore")
    if found is None:
        found = Keystore(folder=current_app.config["WALLET_KEYSTORE"],
                         passphrase=current_app.config["WALLET_KEY_PASSPHRASE"],
                         storage=current_app.config["WALLET_KEY_STORAGE"])
        current_app.extensions["wallet.keystore"] = found
    return found  # type: ignore[no-any-return]
