"""SQLModel tables. Rows are converted to core values at the boundary (store/actions).

Amounts are BIGINT micros. Timestamps are timezone-aware UTC in Python on both
databases (`UTCDateTime`). Constraints that make things happen exactly once live here:
unique idempotency keys, one active signing key per organisation, one redemption per
note, one honour per (issuer, note), one posting per vesting tranche.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Store UTC; always hand back an aware `datetime`.

    Values are bound as aware UTC on every database: a `timestamptz` keeps the instant,
    and SQLite's text format keeps the UTC wall time and no zone (the contract test
    `tests/store/test_dialect_contract.py` pins both), which `process_result_value`
    gives back its zone.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = False, **kw: Any) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, nullable=True, **kw)
    return Field(default_factory=_utcnow, sa_type=UTCDateTime, nullable=False, **kw)


def _micros(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_type=sa.BigInteger, nullable=nullable, **kw)


def _fk(target: str, nullable: bool = False, **kw: Any) -> Any:
    return Field(
        default=None if nullable else ...,
        foreign_key=target,
        ondelete="RESTRICT",
        nullable=nullable,
        **kw,
    )


# Named constraints make Alembic migrations stable across SQLite and PostgreSQL.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# -- organisations and people ------------------------------------------------------------


class Organization(SQLModel, table=True):
    __tablename__ = "organization"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=40, unique=True)
    name: str = Field(max_length=200)
    currency: str = Field(default="USD", max_length=3)
    alumni_days: int = Field(default=90)
    note_ttl_days: int = Field(default=365)
    # Bumped in the same transaction as any change to the organisation's signing keys or
    # trust list: processes keep both per version instead of reading them per request.
    config_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = _ts()


class Person(SQLModel, table=True):
    __tablename__ = "person"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    name: str = Field(default="", max_length=200)
    password_hash: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()


class Membership(SQLModel, table=True):
    __tablename__ = "membership"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "person_id"),
        sa.CheckConstraint("role IN ('admin', 'engineer')", name="role"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id", index=True)
    person_id: int = _fk("person.id", index=True)
    role: str = Field(max_length=20)
    # What this organisation calls the person (the account's own name is not shown to
    # an organisation it has not joined: that would tell it the account exists).
    name: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    started_on: date
    ended_on: date | None = None
    # Set when the person accepted this organisation's own invitation (or the operator
    # added them with a password): until then the membership opens nothing.
    confirmed_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class Invitation(SQLModel, table=True):
    """A one-time link of one organisation: join (confirm a membership) or reset a password.

    Per membership, so that one organisation's link never confirms another's membership.
    """

    __tablename__ = "invitation"
    __table_args__ = (sa.CheckConstraint("purpose IN ('join', 'reset')", name="purpose"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    person_id: int = _fk("person.id", index=True)
    membership_id: int = _fk("membership.id", index=True)
    purpose: str = Field(max_length=10)
    token_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(nullable=True)
    created_by: str = Field(max_length=254)
    created_at: datetime = _ts()


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"
    __table_args__ = (sa.CheckConstraint("kind IN ('personal', 'service')", name="kind"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id", index=True)
    person_id: int | None = _fk("person.id", nullable=True)
    kind: str = Field(max_length=20)
    label: str = Field(default="", max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(nullable=True)
    expires_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


class LoginAttempt(SQLModel, table=True):
    __tablename__ = "login_attempt"
    __table_args__ = (
        sa.Index("ix_login_attempt_address_created", "address", "created_at"),
        sa.Index("ix_login_attempt_created", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254)
    address: str = Field(max_length=64)
    succeeded: bool
    created_at: datetime = _ts()


class WebSession(SQLModel, table=True):
    """A signed-in (or anonymous, form-holding) browser session; the cookie is its key.

    Only the key's SHA-256 is stored. `expires_at` is the earlier of the idle deadline
    (moved on by activity) and `absolute_at`.
    """

    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(max_length=64, unique=True)
    person_id: int | None = _fk("person.id", nullable=True, index=True)
    data: str = Field(default="{}", sa_type=sa.Text)
    idle_seconds: int
    created_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)
    absolute_at: datetime = _ts()
    address: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=200)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    __table_args__ = (sa.Index("ix_audit_event_org_created", "org_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int | None = _fk("organization.id", nullable=True)
    actor: str = Field(max_length=254)
    action: str = Field(max_length=60)
    target: str = Field(default="", max_length=300)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: datetime = _ts()


# -- ledger ------------------------------------------------------------------------------


class Account(SQLModel, table=True):
    """A ledger account; `balance` is a cache of its transfers, re-checked by `ledger check`."""

    __tablename__ = "account"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "name", "currency"),
        # docs/ledger.md, "Invariants": only `external` and `receivable:*` may go negative.
        # The database refuses the rest even if application code were wrong.
        sa.CheckConstraint("allow_negative OR balance >= 0", name="nonnegative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id", index=True)
    name: str = Field(max_length=320)
    kind: str = Field(max_length=30)
    currency: str = Field(default="USD", max_length=3)
    balance: int = _micros(default=0)
    allow_negative: bool = False
    created_at: datetime = _ts()


class Transfer(SQLModel, table=True):
    """One append-only ledger movement; never updated or deleted."""

    __tablename__ = "transfer"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "idempotency_key"),
        sa.CheckConstraint("amount > 0", name="positive"),
        sa.CheckConstraint("from_account_id <> to_account_id", name="distinct_accounts"),
        sa.Index("ix_transfer_org_created", "org_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    from_account_id: int = _fk("account.id", index=True)
    to_account_id: int = _fk("account.id", index=True)
    amount: int = _micros()
    currency: str = Field(max_length=3)
    kind: str = Field(max_length=30)
    idempotency_key: str = Field(max_length=250)
    request_hash: str = Field(max_length=64)
    memo: str = Field(default="", max_length=300)
    ref: str = Field(default="", max_length=300, index=True)
    created_at: datetime = _ts()


class IdempotencyRecord(SQLModel, table=True):
    """An API request's `Idempotency-Key` (IETF draft): claimed, then its response stored."""

    __tablename__ = "idempotency_record"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "scope", "key"),
        sa.CheckConstraint("state IN ('in_flight', 'done')", name="state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    scope: str = Field(max_length=120)
    key: str = Field(max_length=250)
    request_hash: str = Field(max_length=64)
    state: str = Field(max_length=20)
    locked_until: datetime | None = _ts(nullable=True)
    status_code: int | None = None
    response_body: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts()


# -- keys, notes, status -----------------------------------------------------------------


class SigningKey(SQLModel, table=True):
    __tablename__ = "signing_key"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "kid"),
        sa.CheckConstraint("state IN ('active', 'retired', 'revoked')", name="state"),
        # Exactly one active key per organisation (docs/keys.md, "Lifecycle"), enforced by
        # the database.
        sa.Index(
            "uq_signing_key_one_active",
            "org_id",
            unique=True,
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    kid: str = Field(max_length=64)
    state: str = Field(max_length=20)
    public_jwk: dict[str, Any] = Field(sa_type=sa.JSON)
    storage: str = Field(default="file", max_length=10)
    encrypted_pem: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts()
    retired_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)
    compromised_at: datetime | None = _ts(nullable=True)


class StatusList(SQLModel, table=True):
    __tablename__ = "status_list"
    __table_args__ = (sa.UniqueConstraint("org_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    number: int
    size: int
    created_at: datetime = _ts()


class Note(SQLModel, table=True):
    """The issuer's record of a credit note it signed (maps `jti` to the person)."""

    __tablename__ = "note"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "jti"),
        sa.UniqueConstraint("org_id", "status_list", "status_idx"),
        sa.CheckConstraint("amount > 0", name="positive"),
        sa.CheckConstraint(
            "state IN ('active', 'redeemed', 'revoked', 'reclaimed')", name="state"
        ),
        sa.Index("ix_note_org_person", "org_id", "person_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    jti: str = Field(max_length=64)
    person_id: int = _fk("person.id")
    amount: int = _micros()
    currency: str = Field(max_length=3)
    holder_jkt: str = Field(max_length=64)
    holder_jwk: dict[str, Any] = Field(sa_type=sa.JSON)
    kid: str = Field(max_length=64)
    status_list: int
    status_idx: int
    state: str = Field(default="active", max_length=20)
    issued_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime)
    token: str = Field(sa_type=sa.Text)
    revoked_at: datetime | None = _ts(nullable=True)
    revoke_reason: str | None = Field(default=None, max_length=300)
    redeemed_at: datetime | None = _ts(nullable=True)
    redeemed_by: str | None = Field(default=None, max_length=300)
    reclaimed_at: datetime | None = _ts(nullable=True)
    reclaim_kind: str | None = Field(default=None, max_length=20)
    replaced_by: str | None = Field(default=None, max_length=64)


class Redemption(SQLModel, table=True):
    """Issuer side: a note redeemed by another organisation, with the receipt we signed."""

    __tablename__ = "redemption"

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id", index=True)
    note_id: int = _fk("note.id", unique=True)
    redeemer: str = Field(max_length=300)
    amount: int = _micros()
    currency: str = Field(max_length=3)
    receipt: str = Field(sa_type=sa.Text)
    receipt_jti: str = Field(max_length=64)
    request_jti: str = Field(max_length=100)
    created_at: datetime = _ts()


class Nonce(SQLModel, table=True):
    __tablename__ = "nonce"
    __table_args__ = (sa.Index("ix_nonce_org_expires", "org_id", "expires_at"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    value: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime)
    consumed_at: datetime | None = _ts(nullable=True)
    consumed_by: str | None = Field(default=None, max_length=250)


# -- federation --------------------------------------------------------------------------


class TrustedIssuer(SQLModel, table=True):
    __tablename__ = "trusted_issuer"
    __table_args__ = (sa.UniqueConstraint("org_id", "issuer"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    issuer: str = Field(max_length=300)
    name: str = Field(default="", max_length=200)
    issuer_metadata: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    jwks: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    cap: int | None = _micros(nullable=True, default=None)
    currencies: str = Field(default="USD", max_length=100)
    pinned_at: datetime = _ts()
    refreshed_at: datetime = _ts()
    created_at: datetime = _ts()


class HonouredNote(SQLModel, table=True):
    """Verifier side: a note from another issuer credited to one of our people."""

    __tablename__ = "honoured_note"
    __table_args__ = (sa.UniqueConstraint("org_id", "issuer", "note_jti"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    issuer: str = Field(max_length=300)
    note_jti: str = Field(max_length=64)
    person_id: int = _fk("person.id", index=True)
    amount: int = _micros()
    currency: str = Field(max_length=3)
    receipt: str = Field(sa_type=sa.Text)
    receipt_jti: str = Field(max_length=64)
    created_at: datetime = _ts()


# -- grants, vesting, spending -----------------------------------------------------------


class Grant(SQLModel, table=True):
    __tablename__ = "grant_award"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "request_key"),
        sa.CheckConstraint("amount > 0", name="positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id", index=True)
    person_id: int = _fk("person.id", index=True)
    amount: int = _micros()
    currency: str = Field(max_length=3)
    start_on: date
    cliff_months: int = 0
    every: str | None = Field(default=None, max_length=10)
    months: int = 0
    source: str = Field(default="", max_length=100)
    request_key: str | None = Field(default=None, max_length=250)
    created_by: str = Field(default="", max_length=254)
    created_at: datetime = _ts()


class Tranche(SQLModel, table=True):
    __tablename__ = "tranche"
    __table_args__ = (
        sa.UniqueConstraint("grant_id", "seq"),
        sa.CheckConstraint("amount > 0", name="positive"),
        sa.CheckConstraint("state IN ('pending', 'vested', 'forfeited')", name="state"),
        sa.Index("ix_tranche_org_state_due", "org_id", "state", "due_on"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    grant_id: int = _fk("grant_award.id")
    person_id: int = _fk("person.id", index=True)
    seq: int
    due_on: date
    amount: int = _micros()
    state: str = Field(default="pending", max_length=20)
    settled_at: datetime | None = _ts(nullable=True)


class Price(SQLModel, table=True):
    __tablename__ = "price"
    __table_args__ = (sa.UniqueConstraint("org_id", "model"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    model: str = Field(max_length=100)
    input_per_mtok: int = _micros()
    output_per_mtok: int = _micros()
    cached_input_per_mtok: int | None = _micros(nullable=True, default=None)
    currency: str = Field(default="USD", max_length=3)
    source: str = Field(default="", max_length=300)
    as_of: date
    updated_at: datetime = _ts()


class UsageRecord(SQLModel, table=True):
    __tablename__ = "usage_record"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "idempotency_key"),
        sa.Index("ix_usage_record_org_person", "org_id", "person_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    person_id: int = _fk("person.id")
    model: str = Field(max_length=100)
    input_tokens: int = Field(sa_type=sa.BigInteger)
    output_tokens: int = Field(sa_type=sa.BigInteger)
    cached_input_tokens: int = Field(default=0, sa_type=sa.BigInteger,
                                     sa_column_kwargs={"server_default": "0"})
    cost: int = _micros()
    currency: str = Field(max_length=3)
    price_snapshot: dict[str, Any] = Field(sa_type=sa.JSON)
    idempotency_key: str = Field(max_length=250)
    transfer_id: int = _fk("transfer.id")
    created_at: datetime = _ts()


class Hold(SQLModel, table=True):
    """Credit reserved for one model call (`wallet.core.holds`), settled exactly once.

    The state moves `open -> captured | voided | expired` by one conditional update each,
    so a hold is captured, voided or released at most once, whoever asks twice.
    """

    __tablename__ = "hold"
    __table_args__ = (
        sa.UniqueConstraint("public_id"),
        sa.UniqueConstraint("org_id", "idempotency_key"),
        sa.CheckConstraint("amount > 0", name="positive"),
        sa.CheckConstraint("state IN ('open', 'captured', 'voided', 'expired')", name="state"),
        sa.Index("ix_hold_state_expires", "state", "expires_at"),
        sa.Index("ix_hold_org_person_state", "org_id", "person_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(max_length=40)
    org_id: int = _fk("organization.id")
    person_id: int = _fk("person.id")
    model: str | None = Field(default=None, max_length=100)
    amount: int = _micros()
    currency: str = Field(max_length=3)
    state: str = Field(default="open", max_length=10)
    price_snapshot: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    reference: str = Field(default="", max_length=200)
    idempotency_key: str = Field(max_length=250)
    expires_at: datetime = _ts()
    created_at: datetime = _ts()
    closed_at: datetime | None = _ts(nullable=True)
    input_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    output_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    cached_input_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    cost: int | None = _micros(nullable=True, default=None)
    released: int | None = _micros(nullable=True, default=None)
    overrun: int | None = _micros(nullable=True, default=None)


metadata = SQLModel.metadata


class RateLimitWindow(SQLModel, table=True):
    """Requests counted in one fixed window of one rate-limit bucket and partition.

    `key` is `<bucket>:<partition>` (a client address, a person, a token: wallet/web/
    ratelimit.py); `resets_at` the Unix second the window ends. Counted by one
    upsert-increment (`store/ratelimit.py`); rows whose window ended are purged at most
    once a minute per process. UNLOGGED on PostgreSQL (migration 0005): a crash may forget
    the counts, and a commit that wrote only this table waits for no WAL flush.
    """

    __tablename__ = "rate_limit_window"

    key: str = Field(primary_key=True, max_length=200)
    resets_at: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={
        "autoincrement": False})
    hits: int = Field(default=0)


# -- pending honours (verifier side) ---------------------------------------------------------


class PendingHonour(SQLModel, table=True):
    """Verifier side: a honour whose presentation checked out while its issuer could not
    be reached (`wallet.core.pending`). Nothing is credited while it is `pending`; the
    presentation's nonce is spent for this person. A job retries the redeem until the
    issuer answers: `pending -> honoured | refused | expired`, each by one conditional
    update. One open pending honour per note (a partial unique index).
    """

    __tablename__ = "pending_honour"
    __table_args__ = (
        sa.UniqueConstraint("public_id"),
        sa.CheckConstraint("state IN ('pending', 'honoured', 'refused', 'expired')",
                           name="state"),
        sa.CheckConstraint("amount > 0", name="positive"),
        sa.Index("ix_pending_honour_state_due", "state", "next_attempt_at"),
        sa.Index("ix_pending_honour_org_person", "org_id", "person_id"),
        sa.Index("uq_pending_honour_open_note", "org_id", "issuer", "note_jti", unique=True,
                 sqlite_where=sa.text("state = 'pending'"),
                 postgresql_where=sa.text("state = 'pending'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(max_length=40)
    org_id: int = _fk("organization.id")
    person_id: int = _fk("person.id")
    issuer: str = Field(max_length=300)
    note_jti: str = Field(max_length=64)
    amount: int = _micros()
    currency: str = Field(max_length=3)
    presentation: str = Field(sa_type=sa.Text)
    consumer: str = Field(max_length=250)  # the request that spent the nonce
    state: str = Field(default="pending", max_length=10)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = _ts()
    note_expires_at: datetime = _ts()
    last_error: str = Field(default="", max_length=300)  # why the last try failed
    error_code: str | None = Field(default=None, max_length=40)  # refused or expired: why
    error_message: str | None = Field(default=None, max_length=300)
    honoured_id: int | None = _fk("honoured_note.id", nullable=True)
    created_at: datetime = _ts()
    closed_at: datetime | None = _ts(nullable=True)


# -- webhooks (Standard Webhooks, wallet/core/webhooks.py) -----------------------------------


class WebhookEndpoint(SQLModel, table=True):
    """An organisation's webhook endpoint: where its events are POSTed, signed with the
    endpoint's secret (sealed at rest under the key passphrase), and which events."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (sa.UniqueConstraint("public_id"),
                      sa.Index("ix_webhook_endpoint_org", "org_id"))

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(max_length=40)
    org_id: int = _fk("organization.id")
    url: str = Field(max_length=500)
    secret_sealed: str = Field(sa_type=sa.Text)
    event_types: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    enabled: bool = Field(default=True)
    created_by: str = Field(default="", max_length=254)
    created_at: datetime = _ts()


class WebhookMessage(SQLModel, table=True):
    """One event of an organisation (the outbox), written in the transaction of the change
    that caused it; `body` is the exact payload every attempt sends. `event_key` makes an
    event that must be sent once (a note expiring) unique."""

    __tablename__ = "webhook_message"
    __table_args__ = (sa.UniqueConstraint("msg_id"),
                      sa.UniqueConstraint("org_id", "event_key"),
                      sa.Index("ix_webhook_message_org_created", "org_id", "created_at"))

    id: int | None = Field(default=None, primary_key=True)
    msg_id: str = Field(max_length=40)
    org_id: int = _fk("organization.id")
    type: str = Field(max_length=60)
    body: str = Field(sa_type=sa.Text)
    event_key: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()


class WebhookDelivery(SQLModel, table=True):
    """One message to one endpoint: its attempts so far, the last answer, and when the
    next attempt is due. `pending -> delivered | failed`; each attempt is claimed by one
    conditional update (`WHERE state = 'pending' AND next_attempt_at <= now`)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.UniqueConstraint("message_id", "endpoint_id"),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),
        sa.Index("ix_webhook_delivery_state_due", "state", "next_attempt_at"),
        sa.Index("ix_webhook_delivery_endpoint", "endpoint_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = _fk("organization.id")
    message_id: int = _fk("webhook_message.id")
    endpoint_id: int = _fk("webhook_endpoint.id")
    state: str = Field(default="pending", max_length=10)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = _ts()
    last_status: int | None = Field(default=None)
    last_error: str = Field(default="", max_length=300)
    last_attempt_at: datetime | None = _ts(nullable=True)
    closed_at: datetime | None = _ts(nullable=True)


# -- email (the outbox, wallet/actions/mail.py) -----------------------------------------------


class MailMessage(SQLModel, table=True):
    """One email in the outbox, written in the transaction of what caused it. `key` says
    which event it tells of (`invite:<invitation>`, `vested:<tranche>`, …) and is unique,
    so each is queued once however often or concurrently a sweep runs. `queued -> sent |
    failed | expired`; each try is claimed by one conditional update. The body (which may
    hold a one-time link) is blanked once the message is finished."""

    __tablename__ = "mail_message"
    __table_args__ = (
        sa.UniqueConstraint("key"),
        sa.CheckConstraint("state IN ('queued', 'sent', 'failed', 'expired')", name="state"),
        sa.Index("ix_mail_message_state_due", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200)
    org_id: int | None = _fk("organization.id", nullable=True)
    kind: str = Field(max_length=20)  # invite, reset, vested, redeemed, alumni
    to_addr: str = Field(max_length=254)
    to_name: str = Field(default="", max_length=200)
    subject: str = Field(max_length=200)
    body: str = Field(sa_type=sa.Text)
    state: str = Field(default="queued", max_length=10)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = _ts()
    expires_at: datetime | None = _ts(nullable=True)  # a link's end: not worth sending after
    last_error: str = Field(default="", max_length=300)
    sent_via: str | None = Field(default=None, max_length=10)  # "smtp" or "log"
    created_at: datetime = _ts()
    closed_at: datetime | None = _ts(nullable=True)


class MailSweep(SQLModel, table=True):
    """How far each of the mail sweeps has looked (`vested`, `redeemed`, `alumni`)."""

    __tablename__ = "mail_sweep"
    __table_args__ = (sa.UniqueConstraint("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=20)
    swept_to: datetime = _ts()


# What the mail sweeps read every minute: tranches vested and notes redeemed since a time.
sa.Index("ix_tranche_state_settled", Tranche.__table__.c.state,  # type: ignore[attr-defined]
         Tranche.__table__.c.settled_at)  # type: ignore[attr-defined]
sa.Index("ix_note_state_redeemed", Note.__table__.c.state,  # type: ignore[attr-defined]
         Note.__table__.c.redeemed_at)  # type: ignore[attr-defined]
