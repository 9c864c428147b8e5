"""A grant racing a termination never leaves tranches after the end date (both databases).

Regression (found by review, PostgreSQL only): the grant checked employment, then a
termination committed and forfeited what it could see, then the grant committed tranches
due after the end date, which later vested to the leaver.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlmodel import select

from tests.support import World
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions._base import Actor, today
from wallet.models import Tranche
from wallet.store import grants as grant_store
from wallet.store import people

CLI = Actor.cli()


def _single(app: Flask, world: World) -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.bob,
                                   amount="1200.00", start=today(), every="month",
                                   months=12, actor=CLI)


def _from_csv(app: Flask, world: World) -> None:
    text = (f"email,amount,start,cliff_months,every,months\n"
            f"{world.bob},1200.00,{today().isoformat()},,month,12\n")
    with app.app_context():
        grant_actions.import_grants(db.session(), slug="acme", data=text.encode(),
                                    actor=CLI, filename="race.csv")


@pytest.mark.slow
@pytest.mark.parametrize(("how", "pause"), [(_single, (grant_store, "insert_grant")),
                                            (_from_csv, (grant_actions, "_insert_import"))],
                         ids=["single-grant", "csv-import"])
def test_a_termination_during_a_grant_forfeits_its_future_tranches(
        app: Flask, world: World, monkeypatch: pytest.MonkeyPatch, how: Any,
        pause: tuple[Any, str]) -> None:
    # An earlier grant: the leaver's accounts exist, so nothing but the membership lock
    # can order the termination after the new grant.
    _single(app, world)
    checked, terminated = threading.Event(), threading.Event()
    real_insert = getattr(*pause)

    def slow_insert(*args: Any, **kwargs: Any) -> Any:
        checked.set()  # employment was checked; hold the grant open
        terminated.wait(timeout=3)  # with the row lock, the termination cannot finish
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(*pause, slow_insert)
    errors: list[BaseException] = []

    def grant() -> None:
        try:
            how(app, world)
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    def terminate() -> None:
        assert checked.wait(timeout=10), "the grant never reached its insert"
        try:
            with app.app_context():
                grant_actions.terminate(db.session(), slug="acme", email=world.bob,
                                        on=today(), actor=CLI)
        except BaseException as err:
            errors.append(err)
        finally:
            terminated.set()

    threads = [threading.Thread(target=grant), threading.Thread(target=terminate)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Either order is fine (the grant wins and is forfeited, or the termination wins and
    # the grant is refused); what may never happen is a pending tranche after the end date.
    assert all(getattr(e, "code", None) == "conflict" for e in errors), errors
    with app.app_context():
        s = db.session()
        bob = people.person_by_email(s, email=world.bob)
        assert bob is not None
        after_end = s.exec(select(Tranche.state).where(
            Tranche.person_id == bob.id, Tranche.due_on > today())).all()
    assert all(state == "forfeited" for state in after_end), after_end
