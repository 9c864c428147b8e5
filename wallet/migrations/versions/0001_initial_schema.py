"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 02:25:23.266422
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wallet.models

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    op.create_table('login_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempt'))
    )
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.create_index('ix_login_attempt_address_created', ['address', 'created_at'], unique=False)
        batch_op.create_index('ix_login_attempt_email_created', ['email', 'created_at'], unique=False)

    op.create_table('organization',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('alumni_days', sa.Integer(), nullable=False),
    sa.Column('note_ttl_days', sa.Integer(), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organization')),
    sa.UniqueConstraint('slug', name=op.f('uq_organization_slug'))
    )
    op.create_table('person',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('password_hash', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('invite_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('invite_expires_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person')),
    sa.UniqueConstraint('email', name=op.f('uq_person_email')),
    sa.UniqueConstraint('invite_hash', name=op.f('uq_person_invite_hash'))
    )
    op.create_table('account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('allow_negative', sa.Boolean(), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('allow_negative OR balance >= 0', name=op.f('ck_account_nonnegative')),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_account_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account')),
    sa.UniqueConstraint('org_id', 'name', 'currency', name=op.f('uq_account_org_id_name_currency'))
    )
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_org_id'), ['org_id'], unique=False)

    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=True),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('prefix', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('personal', 'service')", name=op.f('ck_api_token_kind')),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_api_token_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_api_token_person_id_person'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_org_id'), ['org_id'], unique=False)

    op.create_table('audit_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=True),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_audit_event_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_event'))
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index('ix_audit_event_org_created', ['org_id', 'created_at'], unique=False)

    op.create_table('grant_award',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('start_on', sa.Date(), nullable=False),
    sa.Column('cliff_months', sa.Integer(), nullable=False),
    sa.Column('every', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True),
    sa.Column('months', sa.Integer(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('request_key', sqlmodel.sql.sqltypes.AutoString(length=250), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_grant_award_positive')),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_grant_award_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_grant_award_person_id_person'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grant_award')),
    sa.UniqueConstraint('org_id', 'request_key', name=op.f('uq_grant_award_org_id_request_key'))
    )
    with op.batch_alter_table('grant_award', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grant_award_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_grant_award_person_id'), ['person_id'], unique=False)

    op.create_table('honoured_note',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('issuer', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('note_jti', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('receipt', sa.Text(), nullable=False),
    sa.Column('receipt_jti', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_honoured_note_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_honoured_note_person_id_person'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_honoured_note')),
    sa.UniqueConstraint('org_id', 'issuer', 'note_jti', name=op.f('uq_honoured_note_org_id_issuer_note_jti'))
    )
    with op.batch_alter_table('honoured_note', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_honoured_note_person_id'), ['person_id'], unique=False)

    op.create_table('idempotency_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=250), nullable=False),
    sa.Column('request_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('locked_until', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('in_flight', 'done')", name=op.f('ck_idempotency_record_state')),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_idempotency_record_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_record')),
    sa.UniqueConstraint('org_id', 'scope', 'key', name=op.f('uq_idempotency_record_org_id_scope_key'))
    )
    op.create_table('membership',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('started_on', sa.Date(), nullable=False),
    sa.Column('ended_on', sa.Date(), nullable=True),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('admin', 'engineer')", name=op.f('ck_membership_role')),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_membership_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_membership_person_id_person'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_membership')),
    sa.UniqueConstraint('org_id', 'person_id', name=op.f('uq_membership_org_id_person_id'))
    )
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_membership_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_membership_person_id'), ['person_id'], unique=False)

    op.create_table('nonce',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('value', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('consumed_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('consumed_by', sqlmodel.sql.sqltypes.AutoString(length=250), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_nonce_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nonce')),
    sa.UniqueConstraint('value', name=op.f('uq_nonce_value'))
    )
    with op.batch_alter_table('nonce', schema=None) as batch_op:
        batch_op.create_index('ix_nonce_org_expires', ['org_id', 'expires_at'], unique=False)

    op.create_table('note',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('jti', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('holder_jkt', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('holder_jwk', sa.JSON(), nullable=False),
    sa.Column('kid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status_list', sa.Integer(), nullable=False),
    sa.Column('status_idx', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('issued_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('revoked_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoke_reason', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('redeemed_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('redeemed_by', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('reclaimed_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reclaim_kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('replaced_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.CheckConstraint("state IN ('active', 'redeemed', 'revoked', 'reclaimed')", name=op.f('ck_note_state')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_note_positive')),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_note_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_note_person_id_person'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_note')),
    sa.UniqueConstraint('org_id', 'jti', name=op.f('uq_note_org_id_jti')),
    sa.UniqueConstraint('org_id', 'status_list', 'status_idx', name=op.f('uq_note_org_id_status_list_status_idx'))
    )
    with op.batch_alter_table('note', schema=None) as batch_op:
        batch_op.create_index('ix_note_org_person', ['org_id', 'person_id'], unique=False)

    op.create_table('price',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('input_per_mtok', sa.BigInteger(), nullable=False),
    sa.Column('output_per_mtok', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('updated_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_price_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_price')),
    sa.UniqueConstraint('org_id', 'model', name=op.f('uq_price_org_id_model'))
    )
    op.create_table('signing_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('kid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('storage', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('encrypted_pem', sa.Text(), nullable=True),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('retired_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('compromised_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('active', 'retired', 'revoked')", name=op.f('ck_signing_key_state')),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_signing_key_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_key')),
    sa.UniqueConstraint('org_id', 'kid', name=op.f('uq_signing_key_org_id_kid'))
    )
    with op.batch_alter_table('signing_key', schema=None) as batch_op:
        batch_op.create_index('uq_signing_key_one_active', ['org_id'], unique=True, sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))

    op.create_table('status_list',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_status_list_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_status_list')),
    sa.UniqueConstraint('org_id', 'number', name=op.f('uq_status_list_org_id_number'))
    )
    op.create_table('trusted_issuer',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('issuer', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('issuer_metadata', sa.JSON(), nullable=False),
    sa.Column('jwks', sa.JSON(), nullable=False),
    sa.Column('cap', sa.BigInteger(), nullable=True),
    sa.Column('currencies', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('pinned_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('refreshed_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_trusted_issuer_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trusted_issuer')),
    sa.UniqueConstraint('org_id', 'issuer', name=op.f('uq_trusted_issuer_org_id_issuer'))
    )
    op.create_table('redemption',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('note_id', sa.Integer(), nullable=False),
    sa.Column('redeemer', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('receipt', sa.Text(), nullable=False),
    sa.Column('receipt_jti', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('request_jti', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['note_id'], ['note.id'], name=op.f('fk_redemption_note_id_note'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_redemption_org_id_organization'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemption')),
    sa.UniqueConstraint('note_id', name=op.f('uq_redemption_note_id'))
    )
    with op.batch_alter_table('redemption', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redemption_org_id'), ['org_id'], unique=False)

    op.create_table('tranche',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('grant_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('settled_at', wallet.models.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'vested', 'forfeited')", name=op.f('ck_tranche_state')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_tranche_positive')),
    sa.ForeignKeyConstraint(['grant_id'], ['grant_award.id'], name=op.f('fk_tranche_grant_id_grant_award'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_tranche_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_tranche_person_id_person'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tranche')),
    sa.UniqueConstraint('grant_id', 'seq', name=op.f('uq_tranche_grant_id_seq'))
    )
    with op.batch_alter_table('tranche', schema=None) as batch_op:
        batch_op.create_index('ix_tranche_org_state_due', ['org_id', 'state', 'due_on'], unique=False)
        batch_op.create_index(batch_op.f('ix_tranche_person_id'), ['person_id'], unique=False)

    op.create_table('transfer',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('from_account_id', sa.Integer(), nullable=False),
    sa.Column('to_account_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=250), nullable=False),
    sa.Column('request_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('memo', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('ref', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_transfer_positive')),
    sa.CheckConstraint('from_account_id <> to_account_id', name=op.f('ck_transfer_distinct_accounts')),
    sa.ForeignKeyConstraint(['from_account_id'], ['account.id'], name=op.f('fk_transfer_from_account_id_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_transfer_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['to_account_id'], ['account.id'], name=op.f('fk_transfer_to_account_id_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transfer')),
    sa.UniqueConstraint('org_id', 'idempotency_key', name=op.f('uq_transfer_org_id_idempotency_key'))
    )
    with op.batch_alter_table('transfer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transfer_from_account_id'), ['from_account_id'], unique=False)
        batch_op.create_index('ix_transfer_org_created', ['org_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_transfer_ref'), ['ref'], unique=False)
        batch_op.create_index(batch_op.f('ix_transfer_to_account_id'), ['to_account_id'], unique=False)

    op.create_table('usage_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('price_snapshot', sa.JSON(), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=250), nullable=False),
    sa.Column('transfer_id', sa.Integer(), nullable=False),
    sa.Column('created_at', wallet.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organization.id'], name=op.f('fk_usage_record_org_id_organization'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_usage_record_person_id_person'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['transfer_id'], ['transfer.id'], name=op.f('fk_usage_record_transfer_id_transfer'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_record')),
    sa.UniqueConstraint('org_id', 'idempotency_key', name=op.f('uq_usage_record_org_id_idempotency_key'))
    )
    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.create_index('ix_usage_record_org_person', ['org_id', 'person_id'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_record_org_person')

    op.drop_table('usage_record')
    with op.batch_alter_table('transfer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_transfer_to_account_id'))
        batch_op.drop_index(batch_op.f('ix_transfer_ref'))
        batch_op.drop_index('ix_transfer_org_created')
        batch_op.drop_index(batch_op.f('ix_transfer_from_account_id'))

    op.drop_table('transfer')
    with op.batch_alter_table('tranche', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tranche_person_id'))
        batch_op.drop_index('ix_tranche_org_state_due')

    op.drop_table('tranche')
    with op.batch_alter_table('redemption', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redemption_org_id'))

    op.drop_table('redemption')
    op.drop_table('trusted_issuer')
    op.drop_table('status_list')
    with op.batch_alter_table('signing_key', schema=None) as batch_op:
        batch_op.drop_index('uq_signing_key_one_active', sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))

    op.drop_table('signing_key')
    op.drop_table('price')
    with op.batch_alter_table('note', schema=None) as batch_op:
        batch_op.drop_index('ix_note_org_person')

    op.drop_table('note')
    with op.batch_alter_table('nonce', schema=None) as batch_op:
        batch_op.drop_index('ix_nonce_org_expires')

    op.drop_table('nonce')
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_membership_person_id'))
        batch_op.drop_index(batch_op.f('ix_membership_org_id'))

    op.drop_table('membership')
    op.drop_table('idempotency_record')
    with op.batch_alter_table('honoured_note', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_honoured_note_person_id'))

    op.drop_table('honoured_note')
    with op.batch_alter_table('grant_award', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grant_award_person_id'))
        batch_op.drop_index(batch_op.f('ix_grant_award_org_id'))

    op.drop_table('grant_award')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_event_org_created')

    op.drop_table('audit_event')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_org_id'))

    op.drop_table('api_token')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_org_id'))

    op.drop_table('account')
    op.drop_table('person')
    op.drop_table('organization')
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.drop_index('ix_login_attempt_email_created')
        batch_op.drop_index('ix_login_attempt_address_created')

    op.drop_table('login_attempt')
    
