"""The liability roll-forward page (issue 15)."""

from __future__ import annotations

from flask import render_template, request

from wallet import clock, db
from wallet.actions import reports as report_actions
from wallet.core.errors import Malformed
from wallet.web import guard
from wallet.web.admin import bp


@bp.get("/reports")
@guard.login_required
def reports(slug: str) -> tuple[str, int]:
    """The roll-forward of a date range (GET ?from=&to=; default: this month)."""
    access = guard.org_access(slug, admin=True)
    first, after = report_actions.this_month(clock.today())
    shown = {"from": request.args.get("from", first.isoformat()).strip(),
             "to": request.args.get("to", after.isoformat()).strip()}
    try:
        start, end = report_actions.parse_range(shown["from"], shown["to"])
    except Malformed as err:
        return render_template("admin/reports.html", access=access, shown=shown,
                               errors=err.extra.get("fields", {}), report=None), 400
    report = report_actions.roll_forward(db.session(), org=access.org, start=start, end=end)
    return render_template("admin/reports.html", access=access, shown=shown, errors={},
                           report=report), 200
