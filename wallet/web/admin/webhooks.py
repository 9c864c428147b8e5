"""Webhook endpoints and their delivery log (issue 15): add an endpoint (its secret shown
once), enable or disable it, send a test event, delete it with a typed confirmation."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import webhooks as actions
from wallet.core.errors import NotFound, WalletError
from wallet.core.webhooks import EVENT_TYPES
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.fields import add_error
from wallet.web.forms import WebhookActionForm, WebhookDeleteForm, WebhookEndpointForm


@bp.route("/webhooks", methods=["GET", "POST"])
@guard.login_required
def webhooks(slug: str) -> tuple[str, int]:
    """The endpoints and the delivery log; add an endpoint (its secret shown once)."""
    access = guard.org_access(slug, admin=True)
    form = WebhookEndpointForm()
    if not form.validate_on_submit():
        return _page(access, form), 422 if form.is_submitted() else 200
    try:
        created = actions.create_endpoint(db.session(), slug=slug, url=form.url.data or "",
                                          types=form.events.data or [], actor=guard.actor())
    except WalletError as err:
        add_error(form.events if "event" in err.message.lower() else form.url, err.message)
        return _page(access, form), 422
    return _page(access, WebhookEndpointForm(formdata=None), created=created), 201


def _page(access: guard.Access, form: WebhookEndpointForm,
          created: actions.Created | None = None,
          delete_form: WebhookDeleteForm | None = None) -> str:
    session = db.session()
    return render_template(
        "admin/webhooks.html", access=access, form=form, created=created,
        endpoints=actions.listing(session, org=access.org), events=EVENT_TYPES,
        log=actions.delivery_log(session, org=access.org), action_form=WebhookActionForm(),
        delete_form=delete_form or WebhookDeleteForm(formdata=None))


@bp.post("/webhooks/<action>")
@guard.login_required
def webhook_action(slug: str, action: str) -> Response | tuple[str, int]:
    """Enable, disable or test an endpoint; the outcome is flashed."""
    guard.org_access(slug, admin=True)
    form = WebhookActionForm()
    if action not in ("enable", "disable", "test"):
        raise NotFound("no such action")
    if form.validate_on_submit():
        session, public_id, actor = db.session(), form.endpoint.data or "", guard.actor()
        try:
            if action == "test":
                actions.send_test(session, slug=slug, public_id=public_id, actor=actor)
                flash("Test event queued: it is sent within a minute; see the log below.",
                      "success")
            else:
                found = actions.set_enabled(session, slug=slug, public_id=public_id,
                                            enabled=action == "enable", actor=actor)
                flash(f"{found.url}: {'enabled' if found.enabled else 'disabled'}.", "success")
        except WalletError as err:
            flash(err.message, "error")
    return redirect(url_for("admin.webhooks", slug=slug))


@bp.post("/webhooks/delete")
@guard.login_required
def webhook_delete(slug: str) -> Response | tuple[str, int]:
    """Delete an endpoint once DELETE is typed; the refusal next to the field otherwise."""
    access = guard.org_access(slug, admin=True)
    form = WebhookDeleteForm()
    if form.validate_on_submit():
        if (form.confirm.data or "").strip() != "DELETE":
            add_error(form.confirm, "Type DELETE to confirm.")
        else:
            try:
                url = actions.delete_endpoint(db.session(), slug=slug,
                                              public_id=form.endpoint.data or "",
                                              actor=guard.actor())
            except WalletError as err:  # not this organisation's endpoint (or gone)
                flash(err.message, "error")
            else:
                flash(f"Endpoint {url} deleted.", "success")
            return redirect(url_for("admin.webhooks", slug=slug))
    return _page(access, WebhookEndpointForm(formdata=None), delete_form=form), 422
