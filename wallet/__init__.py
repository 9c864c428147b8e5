"""Portable compute credits: the Flask application factory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then `WALLET_*` environment, then `test_config`."""
    from wallet import config, db, redaction, web

    redaction.install()  # no secret in a log line: request paths, query values, SQL rows

    instance_path = (test_config or {}).get("WALLET_INSTANCE_PATH") or os.environ.get(
        "WALLET_INSTANCE_PATH")
    app = Flask(__name__, instance_path=instance_path and os.path.abspath(instance_path))
    settings = config.load(app.instance_path, test_config)
    app.config.update(settings)
    https = settings["WALLET_BASE_URL"].startswith("https://")
    app.config.update(
        SECRET_KEY=settings["WALLET_SECRET_KEY"],
        TESTING=settings["WALLET_ENV"] == "testing",
        SESSION_COOKIE_NAME="__Host-wallet" if https else "wallet_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=int(settings["WALLET_SESSION_HOURS"])),
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        WTF_CSRF_SSL_STRICT=https,
        JSON_SORT_KEYS=False,
    )
    db.init_app(app)
    web.init_app(app)
    return app
