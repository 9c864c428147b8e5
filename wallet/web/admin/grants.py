"""Admin: grant credit to one engineer, import a grants CSV, list grants and their vesting."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import grants as grant_actions
from wallet.core.errors import (
    AmountInvalid,
    Conflict,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    RowsInvalid,
    WalletError,
)
from wallet.core.money import format_display
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.fields import add_error
from wallet.web.forms import GrantForm, ImportForm
from wallet.web.paging import page_number

PAGE_SIZE = 100
MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # the app's MAX_CONTENT_LENGTH


@bp.route("/grants", methods=["GET", "POST"])
@guard.login_required
def grants(slug: str) -> Response | tuple[str, int] | str:
    """Grant a single engineer; list the organisation's grants."""
    access = guard.org_access(slug, admin=True)
    form = GrantForm()
    status = 200
    if form.validate_on_submit():
        if form.already_recorded():
            status = 409
        else:
            done = _create(slug, form)
            if isinstance(done, Response):
                return done
            status = done
    elif form.is_submitted():
        status = 422
    return _page(access, form, ImportForm(), None), status


def _create(slug: str, form: GrantForm) -> Response | int:
    """Record the grant and redirect, or put the refusal next to its field (a status)."""
    try:
        result = grant_actions.create_grant(
            db.session(), slug=slug, email=form.email.data or "",
            amount=form.amount.data or "", start=form.start.data,
            every=form.every.data or None,
            months=form.months.data, cliff_months=form.cliff_months.data,
            request_key=form.idempotency_key.data or "", memo=form.memo.data or "",
            actor=guard.actor())
    except WalletError as err:
        return _grant_refused(form, err)
    return _granted(slug, form, result)


def _grant_refused(form: GrantForm, err: WalletError) -> int:
    """Put the action's refusal next to the field it is about; the answer's status."""
    if isinstance(err, AmountInvalid | InsufficientFunds):
        add_error(form.amount, err.message)
    elif isinstance(err, NotFound | Conflict):
        add_error(form.email, err.message)
    elif isinstance(err, IdempotencyConflict):
        form.key_spent()
        return 409
    else:
        form.form_errors.append(err.message)
    return 422


def _granted(slug: str, form: GrantForm, result: grant_actions.GrantResult) -> Response:
    g = result.grant
    how = ("immediately" if g.every is None and result.vested_now == g.amount
           else f"vesting in {len(result.tranches)} tranche(s)")
    form.recorded(f"{format_display(g.amount, g.currency)} granted to {form.email.data} {how}")
    if result.created:
        flash(f"Granted {format_display(g.amount, g.currency)} to "
              f"{form.email.data} {how}.", "success")
    else:
        flash("That grant was already recorded; nothing changed.", "info")
    return redirect(url_for("admin.grants", slug=slug))


@bp.post("/grants/import")
@guard.login_required
def grants_import(slug: str) -> Response | tuple[str, int]:
    """Import a grants CSV, all or nothing, with a row-level error report."""
    access = guard.org_access(slug, admin=True)
    upload = ImportForm()
    problems: RowsInvalid | None = None
    if upload.validate_on_submit():
        done = _import(slug, upload)
        if isinstance(done, Response):
            return done
        problems = done
    return _page(access, GrantForm(), upload, problems), 422


def _import(slug: str, upload: ImportForm) -> Response | RowsInvalid | None:
    """Import and redirect; or the refused file's report (None: no report), its summary put
    next to the file field."""
    storage = upload.file.data
    data = storage.read(MAX_UPLOAD_BYTES + 1)
    name = (storage.filename or "grants.csv")[:100]
    try:
        result = grant_actions.import_grants(db.session(), slug=slug, data=data,
                                             filename=name, actor=guard.actor())
    except WalletError as err:
        add_error(upload.file, _not_imported(err))
        return err if isinstance(err, RowsInvalid) else None
    if result.created:
        flash(f"Imported {result.count:,} grant(s) totalling "
              f"{format_display(result.total, result.currency)} from {name}.", "success")
    else:
        flash(f"{name} was already imported; nothing changed.", "info")
    return redirect(url_for("admin.grants", slug=slug))


def _not_imported(err: WalletError) -> str:
    """Why nothing was imported, in words (a file's problems are listed below the form)."""
    if not isinstance(err, RowsInvalid):
        return f"Nothing was imported: {err.message}"
    listed = (f"the first {len(err.problems)} are listed below" if
              err.total > len(err.problems) else "listed below")
    return (f"Nothing was imported: {err.total:,} problem(s), {listed}."
            " Fix the file and upload it again.")


def _page(access: guard.Access, form: GrantForm, upload: ImportForm,
          problems: RowsInvalid | None) -> str:
    """The grants page; `problems`: a refused upload's report (its first problems, a total)."""
    page = page_number()
    session = db.session()
    total = grant_actions.grant_count(session, org=access.org)
    rows = grant_actions.grant_list(session, org=access.org, limit=PAGE_SIZE,
                                    offset=(page - 1) * PAGE_SIZE)
    return render_template("admin/grants.html", access=access, form=form, upload=upload,
                           problems=problems, rows=rows, page=page, total=total,
                           pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1))
