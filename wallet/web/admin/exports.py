"""CSV downloads of the admin tables (issue 15).

`GET /orgs/<slug>/admin/export/<kind>.csv?from=YYYY-MM-DD&to=YYYY-MM-DD`, for the
organisation's administrators, as the admin pages are (`guard.org_access(admin=True)`);
the kinds and their columns are `wallet.actions.exports`. Bad dates or an unknown kind
are refused (400, 404) before anything is sent; the document is then streamed.
"""

from __future__ import annotations

from flask import Response, request, stream_with_context

from wallet import db
from wallet.actions import exports as export_actions
from wallet.web import guard
from wallet.web.admin import bp


@bp.get("/export/<kind>.csv")
@guard.login_required
def export_csv(slug: str, kind: str) -> Response:
    """Download one of the organisation's tables as CSV."""
    access = guard.org_access(slug, admin=True)
    prepared = export_actions.export(db.session(), slug=access.org.slug, kind=kind,
                                     start=request.args.get("from"),
                                     end=request.args.get("to"))
    return csv_response(prepared)


def csv_response(prepared: export_actions.Export) -> Response:
    """Stream a prepared export as a CSV attachment (not cached: it is the books)."""
    response = Response(stream_with_context(prepared.chunks()),
                        content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{prepared.filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
