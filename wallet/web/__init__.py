"""The web adapter: blueprints per URL area, one error mapping, security headers."""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    """Register extensions, blueprints, error handlers and response headers."""
    from wallet.web import (
        admin,
        api,
        auth,
        boundary,
        errors,
        filters,
        guard,
        headers,
        portal,
        public,
        wellknown,
    )

    csrf.init_app(app)
    guard.init_app(app)
    boundary.init_app(app)  # first of the request hooks: nothing reads a hostile request
    errors.init_app(app)
    headers.init_app(app)
    filters.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(public.bp)
    app.register_blueprint(portal.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api.bp)
    csrf.exempt(api.bp)  # bearer tokens; session callers must send X-CSRF-Token (guard)
