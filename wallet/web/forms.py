"""Form classes (Flask-WTF: CSRF token, labels, per-field errors)."""

from __future__ import annotations

import uuid
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, Email, EqualTo, Length, Optional, ValidationError

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
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices=[("engineer", "Engineer"), ("admin", "Administrator")])
    start = DateField("Start date", validators=[Optional()])


class TokenForm(FlaskForm):
    label = StringField("Label", validators=[Optional(), Length(max=100)],
                        render_kw={"placeholder": "laptop CLI"})
