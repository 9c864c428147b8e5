"""One error hierarchy for the whole project, each error with a stable code.

The codes are part of the external contract (docs/protocol.md §8 "Error codes"). Every
adapter maps a `WalletError` exactly once: to RFC 9457 problem+json in the API, to a
flash message in the portal, to one line on stderr and an exit code in the CLI.
"""

from __future__ import annotations

from typing import Any, ClassVar


def shown(value: object) -> str:
    """Quote an offending value in a message: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class WalletError(Exception):
    """Base of every error a user may see; carries a stable `code` and an HTTP status."""

    code: ClassVar[str] = "malformed"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request is malformed"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or self.title
        self.extra = extra
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        """Return `{"code", "message"}` as used in verification reports."""
        return {"code": self.code, "message": self.message}


class VerificationError(WalletError):
    """A credit note, presentation or signed request did not verify (CLI exit code 1)."""

    status = 422


# -- input -------------------------------------------------------------------------------


class Malformed(WalletError):
    code = "malformed"
    title = "Request or token is malformed"


class RowsInvalid(WalletError):
    """A file of rows (e.g. a grants CSV) was refused; `problems` lists (line, reason)."""

    code = "malformed"
    title = "File has invalid rows"

    def __init__(self, problems: list[tuple[int, str]], message: str | None = None, *,
                 total: int | None = None) -> None:
        # `problems` may be the first of `total` (a report stays small however bad the file).
        self.problems = sorted(problems)
        self.total = len(self.problems) if total is None else total
        first = "; ".join(f"line {line}: {reason}" for line, reason in self.problems[:3])
        more = f" (and {self.total - 3:,} more)" if self.total > 3 else ""
        super().__init__(message or f"{self.total:,} problem(s): {first}{more}")


class TooLarge(WalletError):
    code = "too_large"
    status = 413
    title = "Input is too large"


class AmountInvalid(WalletError):
    code = "amount_invalid"
    title = "Amount is invalid"


class NotFound(WalletError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(WalletError):
    code = "conflict"
    status = 409
    title = "Conflicts with the current state"


# -- verification ------------------------------------------------------------------------


class MalformedToken(VerificationError):
    code = "malformed"
    title = "Token is malformed"


class TokenTooLarge(VerificationError):
    code = "too_large"
    status = 413
    title = "Token is too large"


class UnsupportedAlg(VerificationError):
    code = "unsupported_alg"
    title = "Algorithm or serialisation is not supported"


class UnknownIssuer(VerificationError):
    code = "unknown_issuer"
    title = "Issuer is unknown"


class UntrustedIssuer(VerificationError):
    code = "untrusted_issuer"
    title = "Issuer is not trusted"


class UnknownKey(VerificationError):
    code = "unknown_key"
    title = "Signing key is unknown"


class KeyRevoked(VerificationError):
    code = "key_revoked"
    title = "Signing key was revoked before this token was issued"


class BadSignature(VerificationError):
    code = "bad_signature"
    title = "Signature does not verify"


class NotYetValid(VerificationError):
    code = "not_yet_valid"
    title = "Token is not yet valid"


class Expired(VerificationError):
    code = "expired"
    title = "Token has expired"


class Revoked(VerificationError):
    code = "revoked"
    title = "Note was revoked by its issuer"


class AlreadyRedeemed(VerificationError):
    code = "already_redeemed"
    status = 409
    title = "Note was already redeemed"


class UnknownNote(VerificationError):
    code = "unknown_note"
    title = "Issuer has no record of this note"


class HolderBindingFailed(VerificationError):
    code = "holder_binding_failed"
    title = "Holder binding proof failed"


class AudienceMismatch(VerificationError):
    code = "audience_mismatch"
    title = "Presentation was made for another verifier"


class NonceInvalid(VerificationError):
    code = "nonce_invalid"
    title = "Nonce is unknown, expired or already used"


class NoteAmountInvalid(VerificationError):
    code = "amount_invalid"
    title = "Note amount is invalid"


class PolicyRejected(VerificationError):
    code = "policy_rejected"
    title = "Refused by this organisation's policy"


class IssuerUnavailable(VerificationError):
    code = "issuer_unavailable"
    status = 503
    title = "Issuer could not be reached"


# -- money and access --------------------------------------------------------------------


class Refusal(WalletError):
    """A refusal whose code is decided at run time: a peer's answer passed on unchanged,
    or the first per-item error of a batch where nothing succeeded."""

    status = 422
    title = "Refused"

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.code = code  # type: ignore[misc]


class InsufficientFunds(WalletError):
    code = "insufficient_funds"
    status = 422
    title = "Insufficient funds"


class Unauthorized(WalletError):
    code = "unauthorized"
    status = 401
    title = "Authentication required"


class Forbidden(WalletError):
    code = "forbidden"
    status = 403
    title = "Not allowed"


class IdempotencyConflict(WalletError):
    code = "idempotency_conflict"
    status = 422
    title = "Idempotency key was already used with a different request"


class IdempotencyInFlight(WalletError):
    code = "idempotency_in_flight"
    status = 409
    title = "A request with this idempotency key is still being processed"


class RateLimited(WalletError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class RateLimitUnavailable(WalletError):
    """The shared rate-limit count could not be read, and the endpoint fails closed."""

    code = "rate_limit_unavailable"
    status = 503
    title = "Rate limit could not be checked"


class DatabaseUnavailable(WalletError):
    code = "database_unavailable"
    status = 503
    title = "Database unavailable"


class BadPassphrase(WalletError):
    code = "bad_passphrase"
    status = 400
    title = "Wrong passphrase or damaged key"


class KeyUnavailable(WalletError):
    code = "key_unavailable"
    status = 503
    title = "Private key could not be loaded"


ERROR_CODES: tuple[str, ...] = tuple(
    sorted(
        {
            cls.code
            for cls in (
                Malformed, TooLarge, AmountInvalid, NotFound, Conflict, UnsupportedAlg,
                UnknownIssuer, UntrustedIssuer, UnknownKey, KeyRevoked, BadSignature,
                NotYetValid, Expired, Revoked, AlreadyRedeemed, UnknownNote,
                HolderBindingFailed, AudienceMismatch, NonceInvalid, PolicyRejected,
                IssuerUnavailable, InsufficientFunds, Unauthorized, Forbidden,
                IdempotencyConflict, IdempotencyInFlight, RateLimited, KeyUnavailable,
                BadPassphrase, DatabaseUnavailable, RateLimitUnavailable,
            )
        }
    )
)
"""Every stable code an adapter may emit (documented in docs/protocol.md)."""
