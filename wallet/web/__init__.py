"""The web adapter: blueprints per URL area, one error mapping, security headers."""

from __future__ import annotations

from types import ModuleType

from flask import Blueprint, Flask
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    """Register extensions, blueprints, error handlers and response headers."""
    from wallet.web import api, boundary, errors, filters, guard, headers, ratelimit

    csrf.init_app(app)
    guard.init_app(app)
    boundary.init_app(app)  # first of the request hooks: nothing reads a hostile request
    errors.init_app(app)
    headers.init_app(app)
    filters.init_app(app)
    ratelimit.init_app(app)
    for blueprint, _modules in blueprints():
        app.register_blueprint(blueprint)
    csrf.exempt(api.bp)  # bearer tokens; session callers must send X-CSRF-Token (guard)


def blueprints() -> list[tuple[Blueprint, tuple[ModuleType, ...]]]:
    """Every blueprint, in order of registration, with the modules that hold its views.

    A view registers on its blueprint when its module is imported, and this is the one
    place that imports them: a module not named here serves nothing. (They are imported
    before the first app registers the blueprint, which takes no new route after that.)
    """
    from wallet.web import admin, api, auth, portal, public, wellknown
    from wallet.web.admin import exports as admin_exports
    from wallet.web.admin import federation as admin_federation
    from wallet.web.admin import grants as admin_grants
    from wallet.web.admin import issued as admin_issued
    from wallet.web.admin import keys as admin_keys
    from wallet.web.admin import overview as admin_overview
    from wallet.web.admin import people as admin_people
    from wallet.web.admin import people_actions as admin_people_actions
    from wallet.web.admin import prices as admin_prices
    from wallet.web.admin import reports as admin_reports
    from wallet.web.admin import webhooks as admin_webhooks
    from wallet.web.api import federation as api_federation
    from wallet.web.api import holds as api_holds
    from wallet.web.api import me as api_me
    from wallet.web.api import notes as api_notes
    from wallet.web.api import openapi as api_openapi
    from wallet.web.api import pending as api_pending
    from wallet.web.api import settlements as api_settlements
    from wallet.web.api import usage as api_usage
    from wallet.web.portal import bring as portal_bring
    from wallet.web.portal import dashboard as portal_dashboard
    from wallet.web.portal import notes as portal_notes
    from wallet.web.portal import tokens as portal_tokens
    from wallet.web.portal import transactions as portal_transactions

    return [
        (auth.bp, (auth,)),
        (wellknown.bp, (wellknown,)),
        (public.bp, (public,)),
        (portal.bp, (portal_dashboard, portal_tokens, portal_bring, portal_notes,
                     portal_transactions)),
        (admin.bp, (admin_overview, admin_people, admin_federation, admin_grants,
                    admin_issued, admin_keys, admin_people_actions, admin_prices,
                    admin_exports, admin_reports, admin_webhooks)),
        (api.bp, (api_me, api_federation, api_holds, api_notes, api_openapi, api_pending,
                  api_usage, api_settlements)),
    ]
