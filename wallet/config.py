"""Configuration: defaults, then `WALLET_*` environment variables, then the test dict.

See docs/operations.md, "Configuration". Everything is optional for the embedded default:
the SQLite database, the session secret and the key passphrase live in the instance
folder, the secrets generated on first run. Production (`WALLET_ENV=production`) refuses
to start unless the base URL is https and both secrets come from the environment, look
like no development value and estimate at 128 bits or more (`estimated_bits`).
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wallet.core.errors import WalletError
from wallet.store import _dialect


class ConfigError(WalletError):
    code = "config_invalid"
    status = 500
    title = "Configuration is invalid"


ENVIRONMENTS = ("development", "production", "testing")

DEFAULTS: dict[str, Any] = {
    "WALLET_ENV": "development",
    "WALLET_BASE_URL": "http://127.0.0.1:5000",
    "WALLET_DATABASE_URL": "",  # empty: SQLite file in the instance folder
    "WALLET_SECRET_KEY": "",  # empty: generated into the instance folder (not production)
    "WALLET_KEY_PASSPHRASE": "",  # empty: generated into the instance folder (not production)
    "WALLET_KEYSTORE": "keys",
    "WALLET_KEY_STORAGE": "file",  # "file" (keystore folder) or "db" (encrypted in the database)
    # Passwords: argon2id (RFC 9106 second recommended option by default).
    "WALLET_ARGON2_TIME_COST": 3,
    "WALLET_ARGON2_MEMORY_KIB": 65536,
    # Sign-in throttling: delays, never locks (wallet/core/throttle.py). Per account and
    # client address: free failures, then 2, 4, 8… s up to the cap; per address (any
    # account, against credential stuffing): more free failures, a short cap.
    "WALLET_LOGIN_WINDOW_SECONDS": 86400,  # failures older than this are forgotten
    "WALLET_LOGIN_FREE_FAILURES": 5,
    "WALLET_LOGIN_MAX_DELAY_SECONDS": 900,
    "WALLET_LOGIN_FREE_FAILURES_PER_ADDRESS": 50,
    "WALLET_LOGIN_MAX_ADDRESS_DELAY_SECONDS": 60,
    # Rate limits (wallet/web/ratelimit.py; docs/operations.md, "Rate limits"): requests
    # per minute and endpoint bucket, counted across every process and instance (in the
    # database, or in Redis when WALLET_REDIS_URL is set). Anonymous requests per client
    # address (verify, nonces, redeem, reissue); authenticated ones per person or service
    # token (verify, nonces); wallet files brought in (each derives a key from a
    # passphrase) per person. WALLET_RATE_LIMITS overrides one bucket's quota:
    # "nonces:authenticated=1200, redeem:anonymous=600" (0: no limit).
    "WALLET_PUBLIC_RATE_PER_MINUTE": 120,
    "WALLET_AUTHENTICATED_RATE_PER_MINUTE": 600,
    "WALLET_BRING_PER_MINUTE": 5,
    "WALLET_RATE_LIMITS": "",
    # Redis key prefix of the counts: keeps instances of different databases apart.
    "WALLET_RATE_LIMIT_REDIS_PREFIX": "wallet:ratelimit:",
    "WALLET_TRUST_PROXY_HOPS": 0,  # how many reverse proxies set X-Forwarded-For
    # Browser sessions (kept on the server): absolute lifetime, and idle timeouts for a
    # person who administers any organisation and for everyone else; anonymous sessions
    # (the sign-in form's CSRF token, flash messages) end quickly.
    "WALLET_SESSION_HOURS": 12,
    "WALLET_SESSION_IDLE_MINUTES_ADMIN": 30,
    "WALLET_SESSION_IDLE_MINUTES": 60,
    "WALLET_SESSION_ANONYMOUS_MINUTES": 30,
    # Notes and status lists.
    "WALLET_NOTE_TTL_DAYS": 365,
    "WALLET_STATUS_LIST_SIZE": 131072,
    # Notes ever placed in one list: each may turn non-zero, so this bounds its token.
    "WALLET_STATUS_LIST_MAX_NOTES": 4096,
    "WALLET_STATUS_LIST_TTL": 60,
    "WALLET_NONCE_TTL_SECONDS": 600,
    # Federation: outbound calls go only to pinned endpoints of trusted issuers.
    "WALLET_FEDERATION_TIMEOUT": 5.0,  # total seconds per outbound request, whatever the peer does
    "WALLET_FEDERATION_MAX_BYTES": 1048576,
    # Per peer (origin) and process: requests in flight (keep it below `wallet serve
    # --threads`), and a circuit breaker: this many failures in a row, then the peer is
    # answered issuer_unavailable at once for the cool-down, then one probe decides.
    "WALLET_PEER_MAX_CONCURRENT": 3,
    "WALLET_PEER_BREAKER_FAILURES": 5,
    "WALLET_PEER_BREAKER_COOLDOWN_SECONDS": 30.0,
    "WALLET_FEDERATION_ALLOW_HTTP": True,  # plain http to peers (off in production)
    # Peers on loopback, private or link-local addresses (off in production: an admin
    # must not be able to make the server probe its own network).
    "WALLET_FEDERATION_ALLOW_PRIVATE": True,
    "WALLET_TRUST_REFRESH_SECONDS": 3600,
    "WALLET_IDEMPOTENCY_LEASE_SECONDS": 60,
    "WALLET_RESUBMIT_WINDOW_SECONDS": 600,  # a form sent again with the same values: refused
    # Background jobs (wallet/jobs.py, `wallet worker`): Huey on Redis when a URL is set,
    # else on an SQLite file (empty: jobs.sqlite3 in the instance folder); the queue's name
    # keeps instances of different databases apart on one Redis.
    "WALLET_REDIS_URL": "",
    "WALLET_JOBS_FILE": "",
    "WALLET_JOBS_QUEUE": "wallet",
    # Pending honours (docs/federation.md, "When the issuer sleeps"): a verified note whose
    # issuer cannot be reached waits (202) and a job retries it: first after this many
    # seconds, then doubling up to the most. Off: such a honour answers 503 as before (an
    # instance that runs no `wallet worker` should turn it off).
    "WALLET_PENDING_HONOURS": True,
    "WALLET_PENDING_RETRY_SECONDS": 30,
    "WALLET_PENDING_RETRY_MAX_SECONDS": 3600,
    # Webhooks (wallet/actions/webhooks.py; Standard Webhooks): balance.low when a debit
    # takes an engineer's available below this amount (the organisation's currency; "0"
    # turns it off); note.expiring and alumni.window_closing this many days ahead.
    # Deliveries go through the peers' HTTP transport, so endpoints follow
    # WALLET_FEDERATION_ALLOW_HTTP / _ALLOW_PRIVATE and WALLET_FEDERATION_TIMEOUT.
    "WALLET_WEBHOOK_LOW_BALANCE": "10.00",
    "WALLET_WEBHOOK_NOTE_EXPIRING_DAYS": 7,
    "WALLET_WEBHOOK_ALUMNI_DAYS": 14,
    # Email (wallet/actions/mail.py): smtp://user:pass@host:587?starttls=1 or smtps://…;
    # empty: every message is written to the log instead (development). The sender
    # (empty: "Compute Credits <no-reply@HOST of WALLET_BASE_URL>"); the total seconds of
    # one try (connect, TLS, sign-in, send); tries before a message is given up, and the
    # wait after a failed try: first, doubling, at most.
    "WALLET_SMTP_URL": "",
    "WALLET_MAIL_FROM": "",
    "WALLET_SMTP_TIMEOUT": 10.0,
    "WALLET_MAIL_MAX_ATTEMPTS": 8,
    "WALLET_MAIL_RETRY_SECONDS": 60,
    "WALLET_MAIL_RETRY_MAX_SECONDS": 3600,
}

_DEV_SECRET_MARKERS = ("dev", "change", "secret", "test", "example", "password")


def load(instance_path: str, test_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the settings: defaults, then `WALLET_*` from the environment, then overrides."""
    settings = dict(DEFAULTS)
    explicit: set[str] = set()
    for name, default in DEFAULTS.items():
        raw = os.environ.get(name)
        if raw is not None and raw != "":
            settings[name] = _coerce(name, raw, default)
            explicit.add(name)
    if test_config is not None:
        settings["WALLET_ENV"] = "testing"
        settings.update(test_config)
        explicit.update(test_config)
    env = settings["WALLET_ENV"]
    if env not in ENVIRONMENTS:
        raise ConfigError(f"WALLET_ENV must be one of {', '.join(ENVIRONMENTS)} (got {env!r})")
    settings["WALLET_BASE_URL"] = str(settings["WALLET_BASE_URL"]).rstrip("/")

    instance = Path(instance_path)
    if not instance.exists():
        # The instance folder holds the database and generated secrets: owner only. Two
        # gunicorn workers starting on a fresh folder both get here: one makes it.
        instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not settings["WALLET_DATABASE_URL"]:
        settings["WALLET_DATABASE_URL"] = _dialect.default_url(str(instance))
    settings["WALLET_DATABASE_URL"] = normalise_database_url(settings["WALLET_DATABASE_URL"])
    settings["WALLET_KEYSTORE"] = str(Path(settings["WALLET_KEYSTORE"]).resolve())

    for name, filename in (("WALLET_SECRET_KEY", "secret_key"),
                           ("WALLET_KEY_PASSPHRASE", "key_passphrase")):
        if env == "production":
            _require_production_secret(name, settings[name])
        elif not settings[name]:
            settings[name] = _instance_secret(instance / filename)
    _check_status_lists(settings)
    _check_mail(settings)
    if env == "production":
        _require_https(settings["WALLET_BASE_URL"])
        for name in ("WALLET_FEDERATION_ALLOW_HTTP", "WALLET_FEDERATION_ALLOW_PRIVATE"):
            if name not in explicit:
                settings[name] = False  # https only, public addresses only
    return settings


def normalise_database_url(url: str) -> str:
    """The database URL with the driver we use (the dialect seam decides), or
    `ConfigError` for one that is not an SQLite or PostgreSQL URL."""
    try:
        return _dialect.checked_url(_dialect.normalise_url(url))
    except ValueError as err:
        raise ConfigError(f"WALLET_DATABASE_URL: {err}") from None


def _coerce(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {type(default).__name__} (got {raw!r})") from None
    return raw


def _check_status_lists(settings: Mapping[str, Any]) -> None:
    """Lists large enough to hide holders, whose tokens never outgrow what verifiers take."""
    from wallet.core import status

    size, notes = settings["WALLET_STATUS_LIST_SIZE"], settings["WALLET_STATUS_LIST_MAX_NOTES"]
    if type(size) is not int or type(notes) is not int:
        raise ConfigError("WALLET_STATUS_LIST_SIZE and WALLET_STATUS_LIST_MAX_NOTES must be"
                          " integers")
    try:
        status.check_capacity(size, notes)
    except ValueError as err:
        raise ConfigError(f"WALLET_STATUS_LIST_SIZE / WALLET_STATUS_LIST_MAX_NOTES: {err}"
                          " (see docs/operations.md)") from None


def _check_mail(settings: dict[str, Any]) -> None:
    """A WALLET_SMTP_URL and WALLET_MAIL_FROM that can be used, or a clear refusal."""
    from wallet.core import mail

    if not settings["WALLET_MAIL_FROM"]:
        settings["WALLET_MAIL_FROM"] = mail.default_sender(settings["WALLET_BASE_URL"])
    try:
        mail.parse_smtp_url(str(settings["WALLET_SMTP_URL"]))
        mail.parse_sender(str(settings["WALLET_MAIL_FROM"]))
    except mail.MailConfigError as err:
        raise ConfigError(f"{err} (see docs/operations.md)") from None
    if not float(settings["WALLET_SMTP_TIMEOUT"]) > 0:
        raise ConfigError("WALLET_SMTP_TIMEOUT must be more than 0 seconds")


MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 128


def estimated_bits(value: str) -> int:
    """Estimate a secret's strength in bits, erring low (docs/operations.md).

    Each character that does not merely repeat or step from its neighbour (`aaaa`,
    `abcd`, `4321` add nothing) counts the empirical Shannon entropy per character of
    the whole string: few distinct characters, or a skewed mix of them, count little.
    32 random hex characters (128 true bits) estimate about 115: hex needs 64.
    """
    if not value:
        return 0
    total = len(value)
    per_char = -sum(n / total * math.log2(n / total) for n in Counter(value).values())
    steady = sum(1 for a, b in itertools.pairwise(value) if abs(ord(a) - ord(b)) <= 1)
    return int(per_char * (total - steady))


def _require_production_secret(name: str, value: str) -> None:
    if not value:
        raise ConfigError(f"{name} must be set in production (see docs/operations.md)")
    lowered = value.lower()
    if len(value) < MIN_SECRET_LENGTH or any(m in lowered for m in _DEV_SECRET_MARKERS):
        raise ConfigError(f"{name} looks like a development value; use {MIN_SECRET_LENGTH}+"
                          " random characters")
    bits = estimated_bits(value)
    if bits < MIN_SECRET_BITS:
        raise ConfigError(
            f"{name} is too weak: about {bits} bits, {MIN_SECRET_BITS} needed; generate one"
            ' with python -c "import secrets; print(secrets.token_urlsafe(48))"'
            " (see docs/operations.md)")


def _require_https(base_url: str) -> None:
    parts = urlsplit(base_url)
    if not base_url.startswith("https://") or not parts.hostname:
        raise ConfigError(
            f"WALLET_BASE_URL must be an https:// URL in production (got {base_url!r}):"
            " issuer ids, cookies and CSRF checks depend on it (see docs/operations.md)")


def _instance_secret(path: Path) -> str:
    """Read a generated secret, creating it (mode 0600, never overwritten) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # Write a private temporary file, then link it into place: the link is atomic and
    # fails if another process got there first, in which case its value wins.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        tmp.unlink()
    return value
