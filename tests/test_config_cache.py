"""Signing keys and trust entries are kept per process, per organisation config version.

Every change to an organisation's keys or trust list bumps `config_version` in the same
transaction, and each request reads the organisation afresh: the next request after a
change sees it, and requests between changes read neither table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from flask import Flask

from tests import fed_support as fs
from tests import notes_support as ns
from wallet import db
from wallet.actions import trust as trust_actions
from wallet.actions._base import Actor
from wallet.directory import Directory
from wallet.models import Organization
from wallet.store import people


def _org(slug: str) -> Organization:
    org = people.org_by_slug(db.session(), slug=slug)
    assert org is not None
    return org


@contextmanager
def _statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        seen.append(sql)

    engine = app.extensions["wallet.engine"]
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _active_kid(app: Flask, slug: str = "acme") -> str:
    with app.app_context():
        rows = Directory(db.session(), _org(slug)).own_key_rows()
        return next(r.kid for r in rows if r.state == "active")


def test_keys_are_read_once_per_version_and_a_rotation_is_seen_at_once(app: Flask) -> None:
    fs.setup_federation(app)
    first = _active_kid(app)
    with app.app_context(), _statements(app) as seen:
        s = db.session()
        org = _org("acme")
        rows = Directory(s, org).own_key_rows()
        assert [r.kid for r in rows if r.state == "active"] == [first]
        assert not [q for q in seen if "signing_key" in q]  # kept from the first read
        assert all(sa.inspect(r).transient for r in rows)  # shared copies, in no session

    second = ns.rotate_key(app)
    assert second != first
    assert _active_kid(app) == second  # the rotation bumped the version: read again
    with app.app_context():
        states = {r.kid: r.state for r in Directory(db.session(), _org("acme")).own_key_rows()}
    assert states == {first: "retired", second: "active"}


def test_a_removed_trust_entry_is_gone_for_the_next_request(app: Flask) -> None:
    fs.setup_federation(app)
    with app.app_context():
        assert Directory(db.session(), _org("globex")).trusted(fs.ACME) is not None
    with app.app_context():
        trust_actions.remove(db.session(), slug="globex", issuer=fs.ACME, actor=Actor.cli())
    with app.app_context():
        assert Directory(db.session(), _org("globex")).trusted(fs.ACME) is None


def test_a_reader_of_an_older_version_neither_uses_nor_replaces_the_newer_cache(
        app: Flask) -> None:
    fs.setup_federation(app)
    with app.app_context():
        stale = _org("acme")  # read before the rotation
        db.session().expunge(stale)
    second = ns.rotate_key(app)
    assert _active_kid(app) == second  # caches the new version
    with app.app_context(), _statements(app) as seen:
        rows = Directory(db.session(), stale).own_key_rows()
        assert [q for q in seen if "signing_key" in q]  # read afresh, not from the cache
        assert {r.kid for r in rows if r.state == "active"} == {second}
    with app.app_context(), _statements(app) as seen:
        Directory(db.session(), _org("acme")).own_key_rows()
        assert not [q for q in seen if "signing_key" in q]  # the newer version stayed


def test_honour_still_works_after_the_verifier_rotates(app: Flask) -> None:
    """B signs redeem requests with its new key at once (A re-pins B on the unknown kid)."""
    world = fs.setup_federation(app)
    client = app.test_client()
    assert fs.bring(world, client, fs.export(app, world.holder, "1.00")).status_code == 200
    ns.rotate_key(app, "globex")
    fs.age_pins(app, "acme", seconds=120)  # A may re-pin B (at most once a minute)
    answer = fs.bring(world, client, fs.export(app, world.holder, "2.00"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["honoured"] == 1
