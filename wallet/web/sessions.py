"""Flask sessions kept on the server: the cookie carries a random key, nothing else.

A request without the cookie (API callers with bearer tokens, the honour hot path)
never reaches the store. A session is stored only once something is written to it
(the sign-in form's CSRF token, a flash message, a sign-in); sign-out deletes it, so a
copied cookie stops working; sign-in rotates the key (no fixation).
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import sqlalchemy as sa
from flask import Flask, Request, request
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import sessions as session_actions

log = logging.getLogger("wallet.web")

_KEY = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """The session dict of one request, with what the store knows about it."""

    def __init__(self, initial: dict[str, Any] | None = None,
                 record: session_actions.Record | None = None, *,
                 had_cookie: bool = False) -> None:
        def changed(_self: Any) -> None:
            self.modified = True
            self.accessed = True

        super().__init__(initial, changed)
        self.record = record
        self.had_cookie = had_cookie
        self.modified = False
        self.accessed = False
        self.rotate = False  # a new key at the end of this request (sign-in)
        self.admin = False  # the signed-in person administers an organisation
        self.failure: sa.exc.DBAPIError | None = None  # the store could not be read

    # Reading marks the session accessed, as Flask's own does: the answer then varies
    # by cookie.
    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)


def current() -> ServerSession:
    """This request's session object."""
    found = flask_session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(found, ServerSession)
    return found


class ServerSessionInterface(SessionInterface):
    """Sessions in a `SessionStore` (the database by default)."""

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        key = request.cookies.get(self.get_cookie_name(app))
        if not key:
            return ServerSession()
        record = None
        if _KEY.fullmatch(key):
            try:
                record = session_actions.store().load(session_actions.key_hash(key))
            except sa.exc.DBAPIError as err:
                # Raised again by the first request hook (guard), where the error
                # handlers answer 503; the cookie is kept for the next request.
                db.session().rollback()
                failed = ServerSession()
                failed.failure = err
                return failed
        if record is None:  # unknown, ended or expired: start afresh, drop the cookie
            return ServerSession(had_cookie=True)
        return ServerSession(dict(record.data), record, had_cookie=True)

    def save_session(self, app: Flask, session: SessionMixin,
                     response: Response) -> None:
        assert isinstance(session, ServerSession)
        if session.accessed:
            response.vary.add("Cookie")
        if session.failure is not None:
            return  # nothing was read, so nothing is written (or dropped)
        if not (session.modified or session.rotate or (session.had_cookie
                                                       and session.record is None)):
            return
        # The response is built: nothing the request left uncommitted is kept (views
        # never leave writes behind), and the store's writes start from a clean slate.
        db.session().rollback()
        try:
            self._store(app, session, response)
        except sa.exc.DBAPIError:
            db.session().rollback()
            log.warning("could not store the session", exc_info=True)
            self._drop_cookie(app, response)

    def _store(self, app: Flask, session: ServerSession, response: Response) -> None:
        store = session_actions.store()
        old = session.record
        if old is not None and (session.rotate or not session):
            store.delete(old.key_hash)
            old = None
        if not session:
            if session.had_cookie:
                self._drop_cookie(app, response)
            return
        if old is not None:
            store.save(old.key_hash, dict(session))
            return
        key = secrets.token_urlsafe(32)
        pid = session.get("pid")
        record = session_actions.new_record(
            key=key, person_id=pid if isinstance(pid, int) else None, data=dict(session),
            admin=session.admin, address=(request.remote_addr or "")[:64],
            user_agent=request.headers.get("User-Agent", "")[:200])
        store.create(record)
        self._set_cookie(app, response, key, record)

    def _set_cookie(self, app: Flask, response: Response, key: str,
                    record: session_actions.Record) -> None:
        response.set_cookie(
            self.get_cookie_name(app), key, expires=record.absolute_at,
            httponly=self.get_cookie_httponly(app), domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app), secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app))
        response.vary.add("Cookie")

    def _drop_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            self.get_cookie_name(app), domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app), secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app), httponly=self.get_cookie_httponly(app))
        response.vary.add("Cookie")
