"""Invitations and first passwords happen once, however many try at the same moment
(both databases): the database decides, by conditional updates."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from sqlmodel import select

from tests import support
from tests.support import World
from wallet import db, security
from wallet.actions import accounts
from wallet.actions import orgs as org_actions
from wallet.actions._base import Actor
from wallet.core.errors import WalletError
from wallet.models import Membership
from wallet.store import people

CLI = Actor.cli()
RACERS = 8


def _race(app: Flask, work: Any, count: int) -> tuple[list[Any], list[WalletError]]:
    """Run `work(i)` in `count` threads released together; (results, refusals)."""
    gate = threading.Barrier(count)
    done: list[Any] = []
    refused: list[WalletError] = []
    crashed: list[BaseException] = []

    def run(i: int) -> None:
        with app.app_context():
            gate.wait(timeout=10)
            try:
                done.append(work(i))
            except WalletError as err:
                refused.append(err)
            except BaseException as err:  # reported below
                crashed.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not crashed, crashed
    return done, refused


def test_one_invitation_is_accepted_once(app: Flask, world: World) -> None:
    with app.app_context():
        token = org_actions.add_person(db.session(), slug="acme", email="race@x.test",
                                       actor=CLI).invite
    assert token

    def accept(i: int) -> str:
        accounts.accept_invitation(db.session(), token=token, password=f"password number {i}",
                                   address="127.0.0.1", signed_in=None)
        return f"password number {i}"

    done, refused = _race(app, accept, RACERS)
    assert len(done) == 1 and len(refused) == RACERS - 1
    with app.app_context():
        person = people.person_by_email(db.session(), email="race@x.test")
        assert person is not None
        assert security.verify_password(person.password_hash, done[0])
    support.login(app.test_client(), "race@x.test", done[0])


def test_two_organisations_invitations_set_one_first_password(app: Flask,
                                                              world: World) -> None:
    """acme and globex both invite a new address; both links are used at once: one sets
    the first password, the other is refused (it must not replace it)."""
    with app.app_context():
        s = db.session()
        tokens = [org_actions.add_person(s, slug=slug, email="both@x.test", actor=CLI).invite
                  for slug in ("acme", "globex")]

    def accept(i: int) -> str:
        accounts.accept_invitation(db.session(), token=tokens[i % 2] or "",
                                   password=f"password number {i}", address="127.0.0.1",
                                   signed_in=None)
        return f"password number {i}"

    done, refused = _race(app, accept, 2)
    assert len(done) == 1 and len(refused) == 1
    with app.app_context():
        person = people.person_by_email(db.session(), email="both@x.test")
        assert person is not None and security.verify_password(person.password_hash, done[0])
        confirmed = db.session().exec(select(Membership).where(
            Membership.person_id == person.id,
            Membership.confirmed_at.is_not(None))).all()  # type: ignore[union-attr]
        assert len(confirmed) == 1
