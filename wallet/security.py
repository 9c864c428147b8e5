"""Passwords (argon2id), API tokens and other secrets handed to people."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

TOKEN_PREFIX = "ccw_"  # noqa: S105 - a public marker, not a secret


def _hasher() -> PasswordHasher:
    hasher = current_app.extensions.get("wallet.argon2")
    if hasher is None:
        hasher = PasswordHasher(
            time_cost=int(current_app.config["WALLET_ARGON2_TIME_COST"]),
            memory_cost=int(current_app.config["WALLET_ARGON2_MEMORY_KIB"]),
            parallelism=1,
            type=Type.ID,
        )
        current_app.extensions["wallet.argon2"] = hasher
    return hasher


def hash_password(password: str) -> str:
    """Hash a password with argon2id."""
    return _hasher().hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Check a password; a missing hash still costs one hash so timing reveals nothing."""
    hasher = _hasher()
    if not stored:
        hasher.hash(password)
        return False
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Tell whether a hash was made with weaker parameters than today's."""
    return _hasher().check_needs_rehash(stored)


def new_token() -> tuple[str, str, str]:
    """Return (token shown once, its stored hash, a display prefix)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token), token[: len(TOKEN_PREFIX) + 6]


def hash_token(token: str) -> str:
    """Hash a high-entropy token for storage (SHA-256 suffices: it is not a password)."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


MIN_PASSWORD_LENGTH = 10


def password_problem(password: str) -> str | None:
    """Say what is wrong with a new password, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > 1024:
        return "Use at most 1024 characters."
    return None
