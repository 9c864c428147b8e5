"""Response headers: a strict Content-Security-Policy and friends on every response,
and the Bearer challenge on every 401."""

from __future__ import annotations

from flask import Flask, Response, g, request

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
])


def init_app(app: Flask) -> None:
    """Add the headers after every request."""
    https = app.config["WALLET_BASE_URL"].startswith("https://")
    realm = app.config["WALLET_BASE_URL"].replace('"', "")

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if https:
            response.headers["Strict-Transport-Security"] = "max-age=63072000"
        if response.status_code == 401 and "WWW-Authenticate" not in response.headers:
            response.headers["WWW-Authenticate"] = _challenge(realm)
        if g.get("person") is not None or request.path.startswith("/api/"):
            # Pages and answers about a signed-in person are never cached.
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _challenge(realm: str) -> str:
    """RFC 9110 §11.6.1: a 401 names a scheme; RFC 6750 §3: a token was sent and refused."""
    challenge = f'Bearer realm="{realm}"'
    if request.headers.get("Authorization"):
        challenge += ', error="invalid_token"'
    return challenge
