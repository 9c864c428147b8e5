"""Map errors once: RFC 9457 problem+json for machines, an error page for people."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from wallet import db
from wallet.core.errors import DatabaseUnavailable, Malformed, WalletError

log = logging.getLogger("wallet.web")

PROBLEM_TYPE = "https://compute-credits.example/problems/"

_HTTP_CODES = {400: "malformed", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large",
               415: "unsupported_media_type", 429: "rate_limited"}

# One title per problem type (RFC 9457 §3.1.3: the title does not change from occurrence
# to occurrence). Codes shared by several error classes, and codes that only this
# adapter emits, are named here; any other code takes the title of the class that
# defines it. The class's own words, when they differ, go to `detail`.
TITLES = {
    "malformed": "Request or token is malformed",
    "too_large": "Input is too large",
    "amount_invalid": "Amount is invalid",
    "method_not_allowed": "Method not allowed",
    "unsupported_media_type": "Unsupported media type",
    "csrf_failed": "CSRF check failed",
    "internal_error": "Internal error",
    "http_error": "HTTP error",
}
REFUSED = "Refused"  # a peer's code that no class of ours defines


def _class_titles(cls: type[WalletError] = WalletError) -> dict[str, str]:
    titles: dict[str, str] = {}
    for sub in cls.__subclasses__():
        if "code" in vars(sub) and "title" in vars(sub):
            titles.setdefault(sub.code, sub.title)
        for code, title in _class_titles(sub).items():
            titles.setdefault(code, title)
    return titles


def title_of(code: str) -> str:
    """The one title of problem type `code`."""
    return TITLES.get(code) or _class_titles().get(code) or REFUSED


def wants_json() -> bool:
    """Tell whether the current request is a machine's (API, JSON documents)."""
    path = request.path
    return (path.startswith("/api/") or path.startswith("/.well-known/")
            or path.endswith(".json") or "/status/" in path)


def problem(status: int, code: str, detail: str | None = None, **extra: object) -> Response:
    """Build an `application/problem+json` response (the title follows from `code`)."""
    title = title_of(code)
    body = {"type": PROBLEM_TYPE + code, "title": title, "status": status, "code": code}
    if detail and detail != title:
        body["detail"] = detail
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def from_error(err: WalletError) -> Response:
    """Turn a `WalletError` into problem+json."""
    return problem(err.status, err.code, err.message, **err.extra)


def init_app(app: Flask) -> None:
    """Register the handlers."""
    app.register_error_handler(WalletError, _wallet_error)
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(sa.exc.DBAPIError, _database)
    app.register_error_handler(Exception, _unexpected)


def _wallet_error(err: WalletError) -> tuple[str, int] | Response:
    if wants_json():
        return from_error(err)
    return render_template("error.html", title=err.title, message=err.message,
                           status=err.status), err.status


def _csrf(err: CSRFError) -> tuple[str, int] | Response:
    message = ("This form has expired or was not sent from this site."
               " Reload the page and try again.")
    if wants_json():
        return problem(400, "csrf_failed", message)
    return render_template("error.html", title="Form expired", message=message,
                           status=400), 400


def _http(err: HTTPException) -> tuple[str, int, dict[str, str]] | Response:
    status = err.code or 500
    # Keep what HTTP asks of the status (Allow on a 405, Retry-After, ...).
    headers = {k: v for k, v in err.get_headers() if k.lower() != "content-type"}
    if wants_json():
        code = _HTTP_CODES.get(status, "http_error")
        detail = err.description if code != "http_error" else f"{err.name}: {err.description}"
        answer = problem(status, code, detail)
        answer.headers.update(headers)
        return answer
    return render_template("error.html", title=err.name, message=err.description,
                           status=status), status, headers


def _database(err: sa.exc.DBAPIError) -> tuple[str, int] | Response:
    # A connection that died under a statement (a database restart or failover): the
    # transaction is gone with it and SQLAlchemy has already discarded the pool's
    # other connections. A retry is safe.
    if isinstance(err, sa.exc.DataError):
        return _unstorable(err)
    if not err.connection_invalidated:
        return _unexpected(err)  # any other database error is a bug
    log.warning("database connection lost on %s %s: %s", request.method, request.path,
                type(err.orig).__name__)
    lost = DatabaseUnavailable("The database connection was lost. Nothing was changed;"
                               " please try again.")
    answer = _wallet_error(lost)
    response = answer if isinstance(answer, Response) else current_app.make_response(answer)
    response.headers["Retry-After"] = "1"
    return response


def _unstorable(err: sa.exc.DataError) -> tuple[str, int] | Response:
    # The database refused a value (a NUL, a number out of range) that the boundary
    # should have refused first: the request's fault, but a gap to close.
    db.session().rollback()
    log.warning("database refused a value on %s %s: %s", request.method,
                request.path, type(err.orig).__name__)
    return _wallet_error(Malformed("a value in this request cannot be stored;"
                                   " nothing was changed"))


def _unexpected(err: Exception) -> tuple[str, int] | Response:
    # Never a traceback to a user; the log keeps it (it never holds key material).
    log.exception("unhandled error on %s %s", request.method, request.path)
    message = "Something went wrong on our side. Nothing was changed; please try again."
    if wants_json():
        return problem(500, "internal_error", message)
    return render_template("error.html", title="Internal error", message=message,
                           status=500), 500
