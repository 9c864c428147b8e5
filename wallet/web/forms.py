"""Form classes (Flask-WTF: CSRF token, labels, per-field errors)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import date
from typing import Any, ClassVar

from flask import request
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    DataRequired,
    EqualTo,
    Length,
    NumberRange,
    Optional,
    ValidationError,
)

from wallet.core.errors import WalletError
from wallet.core.money import parse_amount
from wallet.web import resubmit


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


class OnceForm(IdempotentForm):
    """A form that records something once, even through Back and "send again".

    Its key is the one of its first render, kept until a submission is recorded
    (`recorded()`). `already_recorded()` then decides, within the window:
    the same key and values are the same request, which the action answers as before
    (its own idempotency); the same values under a new key (Back fetched the page again)
    are refused with what was recorded, unless the person ticks `again` on that answer;
    the same key with other values is refused, with a fresh key to send them.
    See wallet/web/resubmit.py.
    """

    again = BooleanField("Record another identical one")
    again_of = HiddenField()
    #: What the checkbox says on this form ("Record another identical funding").
    again_label: ClassVar[str] = "Record another identical one"
    #: False where an identical second submission can never be meant.
    allow_again: ClassVar[bool] = True
    #: False when the action has no idempotency key of its own (it cannot replay).
    replays: ClassVar[bool] = True
    _meta_fields: ClassVar[frozenset[str]] = frozenset(
        {"csrf_token", "idempotency_key", "again", "again_of"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.form_id = resubmit.form_id(type(self).__name__, self._prefix)
        self.again.label.text = self.again_label
        self.prior: resubmit.Recorded | None = None  # what an identical submission recorded
        self.prior_changed = False  # the form's key was spent on other values
        if self.idempotency_key.name not in request.form:  # rendered, not posted
            self.idempotency_key.data = resubmit.pending_key(self.form_id)

    def values(self) -> dict[str, str]:
        """The submission's values, normalised; never a password or a file."""
        found: dict[str, str] = {}
        for name, f in self._fields.items():
            if name in self._meta_fields or isinstance(f, PasswordField | FileField):
                continue
            found[name] = _normalised(f)
        return found

    def already_recorded(self) -> bool:
        """True (the form then shows what was recorded) when this would record twice."""
        fp = resubmit.fingerprint(self.values())
        key = self.idempotency_key.data or ""
        records = resubmit.recent(self.form_id)
        spent = [r for r in records if r.key == key]
        if spent and spent[-1].fingerprint != fp:
            # The page was restored with its old key and other values: ask, never guess.
            self._refuse(spent[-1], changed=True)
            return True
        if spent and self.replays:
            return False  # the same request again: the action answers it as the first time
        identical = [r for r in records if r.fingerprint == fp]
        if not identical:
            return False
        latest = identical[-1]
        if (self.allow_again and self.again.data and self.again_of.data == latest.key
                and key != latest.key):
            return False  # the person saw exactly this record and means another one
        self._refuse(latest, changed=False)
        return True

    def recorded(self, description: str) -> None:
        """Remember this submission as recorded; the next render gets a fresh key."""
        resubmit.remember(self.form_id, key=self.idempotency_key.data or "",
                          fingerprint=resubmit.fingerprint(self.values()),
                          description=description)

    def key_spent(self, message: str = "This form was already sent with other values, so"
                  " nothing was recorded now. Check the values and send it again.") -> None:
        """The action says the key was used for other values: say so, with a fresh key."""
        self.idempotency_key.data = resubmit.renew_key(self.form_id)
        self.form_errors.append(message)

    def _refuse(self, prior: resubmit.Recorded, *, changed: bool) -> None:
        self.prior, self.prior_changed = prior, changed
        self.again.data = False
        self.again_of.data = prior.key
        # The answer's form carries a key not spent yet: sending it is a new request.
        fresh = resubmit.pending_key(self.form_id)
        self.idempotency_key.data = (resubmit.renew_key(self.form_id) if fresh == prior.key
                                     else fresh)


def _normalised(f: Any) -> str:
    """A field's value as compared between two submissions ("1000" equals "1,000.00")."""
    data = f.data
    if data is None:
        return ""
    if isinstance(data, date):
        return data.isoformat()
    text = str(data).strip()
    if any(v is amount_valid for v in f.validators):
        with contextlib.suppress(WalletError):
            return str(parse_amount(text))
    if isinstance(f, EmailField):
        return text.lower()
    return text


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


class FundForm(OnceForm):
    again_label = "Record another identical funding"
    amount = StringField("Amount", validators=[DataRequired(), amount_valid],
                         render_kw={"inputmode": "decimal", "placeholder": "250000.00"})
    memo = StringField("Reference (optional)", validators=[Optional(), Length(max=300)],
                       render_kw={"placeholder": "Q3 budget"})


class PersonForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices={"engineer": "Engineer", "admin": "Administrator"})
    start = DateField("Start date", validators=[Optional()])


class TerminateForm(FlaskForm):
    on = DateField("Last day of employment", validators=[DataRequired()])


class GrantForm(OnceForm):
    again_label = "Record another identical grant"
    email = EmailField("Engineer's email", validators=[DataRequired(), Length(max=254)])
    amount = StringField("Amount", validators=[DataRequired(), amount_valid],
                         render_kw={"inputmode": "decimal", "placeholder": "48000.00"})
    every = SelectField("Vesting", choices={"": "Immediately (no vesting)",
                                            "month": "Monthly", "quarter": "Quarterly"},
                        default="")
    start = DateField("Start date", validators=[Optional()])
    months = IntegerField("Over (months)", validators=[Optional(), NumberRange(1, 600)],
                          render_kw={"inputmode": "numeric", "placeholder": "48"})
    cliff_months = IntegerField("Cliff (months)", validators=[Optional(), NumberRange(0, 600)],
                                render_kw={"inputmode": "numeric", "placeholder": "12"})
    memo = StringField("Reference (optional)", validators=[Optional(), Length(max=300)])


class ImportForm(FlaskForm):
    file = FileField("Grants file (CSV, UTF-8)", validators=[FileRequired()],
                     render_kw={"accept": ".csv,text/csv"})


class TokenForm(FlaskForm):
    label = StringField("Label", validators=[Optional(), Length(max=100)],
                        render_kw={"placeholder": "laptop CLI"})
    expires_days = IntegerField(
        "Expires after (days, optional)",
        validators=[Optional(), NumberRange(min=1, max=3650,
                                            message="Between 1 and 3650 days, or empty.")],
        render_kw={"inputmode": "numeric", "placeholder": "90"})


class PriceForm(FlaskForm):
    model = StringField("Model", validators=[DataRequired(), Length(max=100)],
                        render_kw={"placeholder": "gpt-4o", "autocomplete": "off"})
    input_price = StringField("Input, per million tokens",
                              validators=[DataRequired(), amount_valid],
                              render_kw={"inputmode": "decimal", "placeholder": "2.50"})
    output_price = StringField("Output, per million tokens",
                               validators=[DataRequired(), amount_valid],
                               render_kw={"inputmode": "decimal", "placeholder": "10.00"})
    source = StringField("Source (optional)", validators=[Optional(), Length(max=300)],
                         render_kw={"placeholder": "vendor price page, contract"})


class ExportForm(OnceForm):
    again_label = "Export another note of this amount"
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


class RotateKeyForm(OnceForm):
    again_label = "Rotate again: make another new signing key"
    replays = False  # each rotation makes a key


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


class BreakageForm(FlaskForm):
    confirm = BooleanField("I understand: this cannot be undone", validators=[DataRequired()])


class TrustForm(FlaskForm):
    issuer = StringField("Issuer id", validators=[DataRequired(), Length(max=300)],
                         render_kw={"placeholder": "https://credits.example/orgs/acme",
                                    "spellcheck": "false"})
    cap = StringField("Cap per note (optional)", validators=[Optional(), amount_valid],
                      render_kw={"inputmode": "decimal"})
    currencies = StringField("Accepted currencies", default="USD",
                             validators=[DataRequired(), Length(max=100)])


class SettleForm(OnceForm):
    again_label = "Record another identical payment"
    counterparty = HiddenField(validators=[DataRequired()])
    direction = SelectField("Direction", choices={"paid": "We paid them",
                                                  "received": "They paid us"})
    amount = StringField("Amount", validators=[DataRequired(), amount_valid],
                         render_kw={"inputmode": "decimal"})
    reference = StringField("Reference", validators=[Optional(), Length(max=300)])


class PayForm(FlaskForm):
    """Pay a counterparty through the protocol (wallet.actions.settlement.pay): the bank
    reference is the payment's key, so sending the form again sends the same statement."""

    counterparty = HiddenField(validators=[DataRequired()])
    amount = StringField("Amount to pay", validators=[DataRequired(), amount_valid],
                         render_kw={"inputmode": "decimal"})
    reference = StringField("Bank reference", validators=[DataRequired(), Length(max=200)])


# -- accounts: invitations, password change ------------------------------------------------


class JoinForm(FlaskForm):
    """Confirm an invitation while signed in as its person (a button, with CSRF)."""


class JoinWithPasswordForm(FlaskForm):
    password = PasswordField("Your password", validators=[DataRequired(), Length(max=1024)],
                             render_kw={"autocomplete": "current-password", "autofocus": True})


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)],
                            render_kw={"autocomplete": "current-password"})
    password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=1024)],
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat it", validators=[DataRequired(), EqualTo("password",
                            message="The two passwords differ.")],
                            render_kw={"autocomplete": "new-password"})


# -- webhooks (wallet/web/admin/webhooks.py) -------------------------------------------------
# Imported here, not at the top, so that this section stays one block appended to the file.
from wtforms import SelectMultipleField  # noqa: E402
from wtforms.widgets import CheckboxInput, ListWidget  # noqa: E402

from wallet.core.webhooks import EVENT_TYPES  # noqa: E402


class WebhookEndpointForm(FlaskForm):
    """Add a webhook endpoint: its URL and the events it receives."""

    url = StringField("Endpoint URL", validators=[DataRequired("Enter the endpoint's URL."),
                                                   Length(max=500)],
                      render_kw={"inputmode": "url", "autocomplete": "off",
                                 "placeholder": "https://example.com/webhooks/credits"})
    events = SelectMultipleField("Events", choices={name: name for name in EVENT_TYPES},
                                 validators=[DataRequired("Choose at least one event.")],
                                 widget=ListWidget(prefix_label=False),
                                 option_widget=CheckboxInput())


class WebhookActionForm(FlaskForm):
    """One button on one endpoint (enable, disable, send a test event)."""

    endpoint = HiddenField(validators=[DataRequired()])


class WebhookDeleteForm(FlaskForm):
    """Delete an endpoint: typing DELETE guards against slips."""

    endpoint = HiddenField(validators=[DataRequired()])
    confirm = StringField("Type DELETE to confirm", validators=[Optional(), Length(max=20)],
                          render_kw={"autocomplete": "off"})
