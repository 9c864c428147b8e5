"""Admin: the price catalogue (models and prices per million tokens)."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import usage as usage_actions
from wallet.core.errors import AmountInvalid, WalletError
from wallet.core.money import format_display
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.fields import add_error
from wallet.web.forms import PriceForm


@bp.route("/prices", methods=["GET", "POST"])
@guard.login_required
def prices(slug: str) -> Response | tuple[str, int] | str:
    """View the catalogue; add a model or change its prices."""
    access = guard.org_access(slug, admin=True)
    form = PriceForm()
    status = 200
    if form.validate_on_submit():
        done = _set_price(slug, form)
        if isinstance(done, Response):
            return done
        status = done
    elif form.is_submitted():
        status = 422
    entries = usage_actions.catalogue(db.session(), org=access.org)
    return render_template("admin/prices.html", access=access, form=form,
                           entries=entries), status


def _set_price(slug: str, form: PriceForm) -> Response | int:
    """Set the price and redirect, or put the refusal next to its field (a status)."""
    try:
        entry = usage_actions.set_price(
            db.session(), slug=slug, model=form.model.data or "",
            input_price=form.input_price.data or "",
            output_price=form.output_price.data or "", source=form.source.data or "",
            actor=guard.actor())
    except WalletError as err:
        add_error(form.input_price if isinstance(err, AmountInvalid) else form.model,
                  err.message)
        return 422
    flash(f"{entry.model}: {format_display(entry.input_per_mtok, entry.currency)} input,"
          f" {format_display(entry.output_per_mtok, entry.currency)} output per million"
          " tokens.", "success")
    return redirect(url_for("admin.prices", slug=slug))
