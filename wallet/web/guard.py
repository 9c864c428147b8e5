"""Who is asking: the signed-in person, their access to an organisation, API principals.

Tenant isolation lives here and in the actions: every page and API call resolves the
organisation from the URL and the caller's membership of *that* organisation. A
person with no membership gets 404 (the organisation's pages do not exist for them);
an engineer on an admin page gets 403.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, g, redirect, request, session, url_for
from flask_wtf.csrf import ValidationError as CsrfInvalid
from flask_wtf.csrf import validate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix

from wallet import db
from wallet.actions import accounts
from wallet.actions import orgs as org_actions
from wallet.actions import sessions as session_actions
from wallet.actions._base import Actor, today
from wallet.core.errors import Forbidden, NotFound, Unauthorized
from wallet.models import ApiToken, Membership, Organization, Person
from wallet.web import sessions as web_sessions
from wallet.web.sessions import ServerSessionInterface

F = TypeVar("F", bound=Callable[..., Any])


def init_app(app: Flask) -> None:
    """Trust proxies only as configured; load the signed-in person per request."""
    app.session_interface = ServerSessionInterface()
    hops = int(app.config["WALLET_TRUST_PROXY_HOPS"])
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    @app.before_request
    def _load_person() -> None:
        g.person = None
        failure = web_sessions.current().failure
        if failure is not None:
            raise failure  # the session store was unreachable: 503, as for any query
        pid = session.get("pid")
        if pid is None:
            return
        person = accounts.person_by_id(db.session(), person_id=pid)
        if person is None or session.get("mk") != _marker(person):
            session.clear()  # deleted account or changed password: this session is over
            return
        g.person = person


def _marker(person: Person) -> str:
    return hashlib.sha256((person.password_hash or "").encode()).hexdigest()[:16]


def start_session(person: Person) -> None:
    """Sign a person in: a new session key (no fixation), bound to their password."""
    assert person.id is not None
    current = web_sessions.current()
    current.clear()
    current["pid"] = person.id
    current["mk"] = _marker(person)
    current.rotate = True
    current.admin = accounts.is_admin_anywhere(db.session(), person=person)
    g.person = person


def end_session() -> None:
    """Sign out: the stored session is deleted now, so a copy of the cookie is worthless."""
    current = web_sessions.current()
    if current.record is not None:
        session_actions.store().delete(current.record.key_hash)
        current.record = None
        current.had_cookie = True
    current.clear()
    g.person = None


def session_key_hash() -> str | None:
    """The stored key of this request's session (to tell it apart in a list)."""
    record = web_sessions.current().record
    return None if record is None else record.key_hash


def client_address() -> str:
    """The client's address (after the configured proxies)."""
    return (request.remote_addr or "unknown")[:64]


def current_person() -> Person | None:
    """The signed-in person, if any."""
    return g.get("person")


def actor() -> Actor:
    """The signed-in person as an `Actor`."""
    person = current_person()
    if person is None:
        raise Unauthorized("sign in first")
    return Actor.of(person)


def login_required(view: F) -> F:
    """Send anonymous visitors to the sign-in page, then back."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_person() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Access:
    """A person's access to one organisation."""

    org: Organization
    person: Person
    membership: Membership
    alumni: bool  # employment ended, within the alumni window: read-only, may export

    @property
    def is_admin(self) -> bool:
        return self.membership.role == "admin" and not self.alumni

    @property
    def access_ends(self) -> date | None:
        if self.membership.ended_on is None:
            return None
        return self.membership.ended_on + timedelta(days=self.org.alumni_days)


def org_access(slug: str, *, admin: bool = False, write: bool = False) -> Access:
    """Resolve the signed-in person's access to `slug`, or raise 401/403/404."""
    person = current_person()
    if person is None:
        raise Unauthorized("sign in first")
    return access_for(person, slug, admin=admin, write=write)


def access_for(person: Person, slug: str, *, admin: bool = False, write: bool = False) -> Access:
    """Resolve a person's access to `slug` (used for sessions and tokens alike)."""
    found = org_actions.confirmed_membership(db.session(), slug=slug, person=person)
    if found is None:
        # Not confirmed (through this organisation's own invitation): nothing opens yet.
        raise NotFound("no such organisation")
    return check_access(found[0], person, found[1], admin=admin, write=write)


def check_access(org: Organization, person: Person, m: Membership, *, admin: bool = False,
                 write: bool = False) -> Access:
    """Apply employment dates, the alumni window and the role to a membership."""
    on = today()
    alumni = False
    if m.ended_on is not None and on > m.ended_on:
        ends = m.ended_on + timedelta(days=org.alumni_days)
        if on > ends:
            raise Forbidden(f"Your access to {org.name} ended on {ends.isoformat()}.")
        alumni = True
    access = Access(org, person, m, alumni)
    if admin and not access.is_admin:
        raise Forbidden("This page is for administrators of this organisation.")
    if write and alumni:
        raise Forbidden("Former employees have read-only access (they may still export notes).")
    return access


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API caller."""

    org: Organization
    person: Person | None
    token: ApiToken | None

    @property
    def actor(self) -> Actor:
        if self.person is not None:
            return Actor.of(self.person)
        assert self.token is not None
        return Actor(f"service-token:{self.token.prefix}")


def api_principal(slug: str, *, service: bool = False, write: bool = False) -> Principal:
    """Authenticate an API call for organisation `slug` by bearer token or session.

    `write`: the call changes the person's holdings, which former employees in their
    alumni window may not do (they keep read access and may export notes).

    Session callers must also send the CSRF token in `X-CSRF-Token`: a cookie alone
    never authorises a state-changing API call.
    """
    header = request.headers.get("Authorization", "")
    if header:
        return _bearer(header, slug, service=service, write=write)
    person = current_person()
    if person is None:
        raise Unauthorized("send Authorization: Bearer <token> or sign in")
    if service:
        raise Forbidden("this endpoint needs a service token")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        try:
            validate_csrf(request.headers.get("X-CSRF-Token", ""))
        except CsrfInvalid:
            raise Forbidden("session callers must send the X-CSRF-Token header") from None
    access = access_for(person, slug, write=write)
    return Principal(access.org, person, None)


def _bearer(header: str, slug: str, *, service: bool, write: bool) -> Principal:
    """The principal of an `Authorization: Bearer` header, checked for `slug`."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("use Authorization: Bearer <token>")
    row, org, person, membership = org_actions.authenticate(db.session(), token=token)
    if org.slug != slug:
        raise Forbidden("this token belongs to another organisation")
    if service and row.kind != "service":
        raise Forbidden("this endpoint needs a service token")
    if person is not None:
        if membership is None or membership.confirmed_at is None:
            raise NotFound("no such organisation")
        # Still employed, or within the alumni window (read-only unless `write`).
        check_access(org, person, membership, write=write)
    return Principal(org, person, row)
