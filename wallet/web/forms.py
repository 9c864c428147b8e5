"""Form classes (Flask-WTF: CSRF token, labels, per-field errors)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    DateField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

from wallet.core.errors import WalletError
from wallet.core.money import parse_amount


def amount_valid(_form: Any, field: Any) -> None:
    """Validate an amount with the one parser the whole project uses."""
    try:
        parse_amount(field.data or "")
    except WalletError as err:
        raise ValidationError(err.message) from None


class IdempotentForm(FlaskForm):
    """A money-moving form: a hidden key makes a double submit harmless."""

    idempotency_key = HiddenField(default=lambda: uuid.uuid4().hex)

    def submit_ok(self) -> bool:
        """True when this form (of several on a page, told apart by prefix) was posted valid."""
        return bool(self.is_submitted() and self.idempotency_key.name in request.form
                    and self.validate())


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)],
                       render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)],
                             render_kw={"autocomplete": "current-password"})


class SetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=1024)],
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat it", validators=[DataRequired(), EqualTo("password",
                            message="The two passwords differ.")],
                            render_kw={"autocomplete": "new-password"})


class SignOutForm(FlaskForm):
    pass


class FundForm(IdempotentForm):
    amount = StringField("Amount", validators=[DataRequired(), amount_valid],
                         render_kw={"inputmode": "decimal", "placeholder": "250000.00"})
    memo = StringField("Reference (optional)", validators=[Optional(), Length(max=300)],
                       render_kw={"placeholder": "Q3 budget"})


class PersonForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices={"engineer": "Engineer", "admin": "Administrator"})
    start = DateField("Start date", validators=[Optional()])


class TokenForm(FlaskForm):
    label = StringField("Label", validators=[Optional(), Length(max=100)],
                        render_kw={"placeholder": "laptop CLI"})


class ExportForm(IdempotentForm):
    amount = StringField("Amount", validators=[DataRequired(), amount_valid],
                         render_kw={"inputmode": "decimal", "placeholder": "1250.00"})
    mode = SelectField("Holder key", choices={
        "new": "Create a new holder key and give me a wallet file",
        "jwk": "Use a public key I already have (from 'wallet keys holder-new')"},
        default="new")
    passphrase = PasswordField("Passphrase for the wallet file",
                               validators=[Optional(), Length(min=8, max=1024)],
                               render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat the passphrase",
                            validators=[EqualTo("passphrase", message="The passphrases differ.")],
                            render_kw={"autocomplete": "new-password"})
    holder_jwk = TextAreaField("Public JWK", validators=[Optional(), Length(max=2000)],
                               render_kw={"rows": 4, "spellcheck": "false",
                                          "placeholder": '{"kty":"OKP","crv":"Ed25519","x":"…"}'})


class BringWalletForm(IdempotentForm):
    wallet = FileField("Wallet file (.ccwallet)", validators=[FileRequired()])
    passphrase = PasswordField("Its passphrase", validators=[DataRequired(), Length(max=1024)],
                               render_kw={"autocomplete": "current-password"})


class BringPresentationsForm(IdempotentForm):
    presentations = TextAreaField("Presentations (the JSON printed by 'wallet note present')",
                                  validators=[DataRequired(), Length(max=600_000)],
                                  render_kw={"rows": 6, "spellcheck": "false"})


class VerifyForm(FlaskForm):
    note = TextAreaField("Note", validators=[Optional(), Length(max=20_000)],
                         render_kw={"rows": 6, "spellcheck": "false",
                                    "placeholder": "eyJhbGciOiJFZERTQSIs…~"})
    upload = FileField("…or upload a note file")


class RotateForm(FlaskForm):
    pass


class RevokeKeyForm(FlaskForm):
    kid = HiddenField()
    compromised_at = StringField("Compromised at (UTC, ISO 8601)",
                                 validators=[DataRequired(), Length(max=40)],
                                 render_kw={"placeholder": "2026-11-27T09:30:00Z"})
    confirm = StringField("Type the first 8 characters of the kid to confirm",
                          validators=[DataRequired(), Length(max=64)],
                          render_kw={"autocomplete": "off"})


class RevokeNoteForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(), Length(max=300)])


class TrustForm(FlaskForm):
    issuer = StringField("Issuer id", validators=[DataRequired(), Length(max=300)],
                         render_kw={"placeholder": "https://credits.example/orgs/acme",
                                    "spellcheck": "false"})
    cap = StringField("Cap per note (optional)", validators=[Optional(), amount_valid],
                      render_kw={"inputmode": "decimal"})
    currencies = StringField("Accepted currencies", default="USD",
                             validators=[DataRequired(), Length(max=100)])


class SettleForm(IdempotentForm):
    counterparty = HiddenField(validators=[DataRequired()])
    direction = SelectField("Direction", choices={"paid": "We paid them",
                                                  "received": "They paid us"})
    amount = StringField("Amount", validators=[DataRequired(), amount_valid],
                         render_kw={"inputmode": "decimal"})
    reference = StringField("Reference", validators=[Optional(), Length(max=300)])
