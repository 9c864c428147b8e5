"""Accounts across organisations: invitations per membership, confirmation, resets.

People are shared by every organisation of an instance; a membership is usable only once
its person confirmed it, through that organisation's own invitation.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World

INVITE = re.compile(r"/invite/([A-Za-z0-9_-]+)")
NEW_PW = "a long new password"


def _add_on_page(client: FlaskClient, slug: str, email: str) -> tuple[int, str | None, str]:
    """An admin adds `email` on the people page; (status, invitation token, page)."""
    r = support.post_form(client, f"/orgs/{slug}/admin/people",
                          {"email": email, "role": "engineer"})
    html = r.get_data(as_text=True)
    found = INVITE.search(html)
    return r.status_code, (found.group(1) if found else None), html


def _signed_in(app: Flask, email: str, password: str = support.PASSWORD) -> FlaskClient:
    client = app.test_client()
    support.login(client, email, password)
    return client


def test_an_invitation_of_one_org_never_opens_another_orgs_wallet(app: Flask,
                                                                   world: World) -> None:
    """Regression (issue 11, hole 1): acme's admin claimed a globex membership through
    acme's invitation link and then held the person's globex wallet."""
    acme, globex = _signed_in(app, world.acme_admin), _signed_in(app, world.globex_admin)
    status, acme_link, _ = _add_on_page(acme, "acme", "newhire@globex.test")
    assert status == 200 and acme_link
    status, globex_link, html = _add_on_page(globex, "globex", "newhire@globex.test")
    # acme's admin uses acme's link and signs in as the new person.
    attacker = app.test_client()
    r = support.post_form(attacker, f"/invite/{acme_link}", {"password": NEW_PW,
                                                             "confirm": NEW_PW})
    assert r.status_code == 302
    assert attacker.get("/orgs/acme/wallet").status_code == 200
    assert attacker.get("/orgs/globex/wallet").status_code == 404
    assert "Globex" not in attacker.get("/").get_data(as_text=True)
    # globex got the same answer as for a fresh address: its own link, no word of acme.
    assert status == 200 and globex_link and globex_link != acme_link
    assert "another organisation" not in html
    # globex's own link, in the real person's hands, needs the account's password now:
    # it never replaces it.
    real = app.test_client()
    r = support.post_form(real, f"/invite/{globex_link}", {"password": "another password 1"})
    assert r.status_code == 401
    assert attacker.get("/orgs/globex/wallet").status_code == 404


def test_adding_a_person_gives_the_same_answer_whether_or_not_they_have_an_account(
        app: Flask, world: World) -> None:
    """Regression: adding someone who had an account elsewhere showed no link, which told
    the admin that the address belongs to another organisation."""
    globex = _signed_in(app, world.globex_admin)
    known = _add_on_page(globex, "globex", world.bob)  # bob has an acme account
    fresh = _add_on_page(globex, "globex", "stranger@x.test")
    assert known[0] == fresh[0] == 200
    assert known[1] and fresh[1]
    assert "another organisation" not in known[2]
    assert _answer(known[2], world.bob) == _answer(fresh[2], "stranger@x.test")


def _answer(html: str, email: str) -> str:
    """What the people page says about the person just added: flash and invitation card."""
    parts = re.findall(r'<div class="flashes">.*?</div>|<div class="card highlight".*?</div>',
                       html, re.S)
    assert len(parts) == 2, html[:3000]
    return INVITE.sub("/invite/…", "".join(parts).replace(email, "…"))


def test_a_name_given_at_one_organisation_does_not_show_at_another(app: Flask,
                                                                    world: World) -> None:
    """Regression: the people page showed the account's name as another organisation had
    typed it, which told the admin the address had an account there."""
    acme = _signed_in(app, world.acme_admin)
    support.post_form(acme, "/orgs/acme/admin/people",
                      {"email": "carol@x.test", "name": "Carol From Acme", "role": "engineer"})
    globex = _signed_in(app, world.globex_admin)
    support.post_form(globex, "/orgs/globex/admin/people",
                      {"email": "carol@x.test", "name": "", "role": "engineer"})
    assert "Carol From Acme" in acme.get("/orgs/acme/admin/people").get_data(as_text=True)
    assert "Carol From Acme" not in globex.get("/orgs/globex/admin/people").get_data(
        as_text=True)


def test_an_existing_account_joins_by_signing_in(app: Flask, world: World) -> None:
    globex = _signed_in(app, world.globex_admin)
    _status, link, _html = _add_on_page(globex, "globex", world.bob)
    assert link
    bob = _signed_in(app, world.bob)
    # Not confirmed yet: globex does not exist for bob, and no API token of his works there.
    assert bob.get("/orgs/globex/wallet").status_code == 404
    assert "Globex" not in bob.get("/").get_data(as_text=True)
    page = bob.get(f"/invite/{link}").get_data(as_text=True)
    assert "Globex" in page and "Join" in page
    r = support.post_form(bob, f"/invite/{link}", {})
    assert r.status_code == 302
    assert bob.get("/orgs/globex/wallet").status_code == 200
    # Single use: the link does nothing more.
    assert support.post_form(app.test_client(), f"/invite/{link}",
                             {"password": support.PASSWORD}).status_code == 401


def test_an_existing_account_joins_with_its_password(app: Flask, world: World) -> None:
    globex = _signed_in(app, world.globex_admin)
    _status, link, _html = _add_on_page(globex, "globex", world.bob)
    assert link
    anonymous = app.test_client()
    wrong = support.post_form(anonymous, f"/invite/{link}", {"password": "not the password"})
    assert wrong.status_code == 401
    assert support.post_form(anonymous, f"/invite/{link}",
                             {"password": support.PASSWORD}).status_code == 302
    assert anonymous.get("/orgs/globex/wallet").status_code == 200


def test_someone_else_signed_in_cannot_use_an_invitation(app: Flask, world: World) -> None:
    globex = _signed_in(app, world.globex_admin)
    _status, link, _html = _add_on_page(globex, "globex", world.bob)
    assert link
    r = support.post_form(globex, f"/invite/{link}", {"password": support.PASSWORD})
    assert r.status_code == 403
    bob = _signed_in(app, world.bob)
    assert bob.get("/orgs/globex/wallet").status_code == 404


def test_an_unconfirmed_membership_opens_no_api_and_credits_nobody(app: Flask,
                                                                    world: World) -> None:
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor
    from wallet.core.errors import Conflict

    with app.app_context():
        s = db.session()
        added = orgs.add_person(s, slug="globex", email=world.bob,
                                actor=Actor.of(_person(app, world.globex_admin)))
        # The operator may make a token before bob joins; it opens nothing until then.
        token, _row = orgs.create_token(s, slug="globex", email=world.bob, actor=Actor.cli())
        # An admin may not (a person's tokens come from their own confirmed membership).
        with pytest.raises(Conflict, match="not confirmed"):
            orgs.create_token(s, slug="globex", email=world.bob,
                              actor=Actor.of(_person(app, world.globex_admin)))
    bearer = {"Authorization": f"Bearer {token}"}
    anonymous = app.test_client()
    assert anonymous.get("/api/v1/orgs/globex/me", headers=bearer).status_code == 404
    assert anonymous.post("/api/v1/orgs/globex/nonces", headers=bearer).status_code == 404
    assert anonymous.post("/api/v1/orgs/globex/honour", headers=bearer,
                          json={"presentations": []}).status_code == 404
    # Nor does a session of bob's: globex's pages and API do not exist for him yet.
    bob = _signed_in(app, world.bob)
    assert bob.get("/api/v1/orgs/globex/me").status_code == 404
    assert bob.get("/api/v1/orgs/acme/me").status_code == 200
    # Once bob accepts globex's invitation, both work.
    assert added.invite
    assert support.post_form(bob, f"/invite/{added.invite}", {}).status_code == 302
    assert bob.get("/api/v1/orgs/globex/me").status_code == 200
    assert anonymous.get("/api/v1/orgs/globex/me", headers=bearer).status_code == 200


def _person(app: Flask, email: str):  # type: ignore[no-untyped-def]
    from wallet import db
    from wallet.store import people

    with app.app_context():
        person = people.person_by_email(db.session(), email=email)
        assert person is not None
        return person


def test_operator_with_a_password_file_makes_confirmed_memberships(
        app: Flask, world: World, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "pw"
    secret.write_text("operator chosen pw\n")
    r = support.run_cli(app, capsys, "person", "add", "--org", "globex", "--email",
                        "carol@x.test", "--password-file", str(secret))
    assert r.exit_code == 0, r.err
    assert "/invite/" not in r.out
    assert _signed_in(app, "carol@x.test", "operator chosen pw").get(
        "/orgs/globex/wallet").status_code == 200
    # Without a password file: an invitation, also for an account that exists.
    r = support.run_cli(app, capsys, "person", "add", "--org", "globex", "--email", world.bob)
    assert r.exit_code == 0 and "/invite/" in r.out


@pytest.mark.parametrize("email", ["a\x00b@x.test", "ab@x.te\x00st", "a\tb@x.test",
                                   "ab@x.test\x7f", "a\u202eb@x.test", "ab@\x1bx.test"])
def test_control_characters_in_emails_are_refused(app: Flask, world: World,
                                                  email: str) -> None:
    """Regression (issue 11, hole 10): a NUL reached PostgreSQL (500) and other control
    characters were stored, then printed to terminals and pages."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor
    from wallet.core.errors import Malformed

    with app.app_context(), pytest.raises(Malformed):
        orgs.add_person(db.session(), slug="acme", email=email, actor=Actor.cli())
    admin = _signed_in(app, world.acme_admin)
    status, link, html = _add_on_page(admin, "acme", email)
    assert link is None
    # Next to the field; a NUL may already be refused as hostile input (400) before it.
    assert ((status == 200 and "is not an email address" in html)
            or (status == 400 and "NUL" in html)), (status, html[:2000])
    # Signing in with one is a plain refusal, never a 500.
    client = app.test_client()
    r = support.post_form(client, "/login", {"email": email, "password": "whatever pw 1"})
    assert r.status_code in (400, 401)


# -- password change and reset -------------------------------------------------------------


def test_changing_my_password_needs_the_current_one_and_ends_other_sessions(
        app: Flask, world: World) -> None:
    first, second = _signed_in(app, world.ada), _signed_in(app, world.ada)
    wrong = support.post_form(first, "/account/password", {
        "current": "not my password", "password": NEW_PW, "confirm": NEW_PW},
        page="/account")
    assert wrong.status_code == 401
    r = support.post_form(first, "/account/password", {
        "current": support.PASSWORD, "password": NEW_PW, "confirm": NEW_PW}, page="/account")
    assert r.status_code == 302
    assert first.get("/orgs/acme/wallet").status_code == 200  # this session goes on
    assert second.get("/orgs/acme/wallet").status_code == 302  # every other one ended
    _signed_in(app, world.ada, NEW_PW)
    refused = app.test_client()
    token = support.csrf_token(refused)
    assert refused.post("/login", data={"email": world.ada, "password": support.PASSWORD,
                                        "csrf_token": token}).status_code == 401


def _reset_link(client: FlaskClient, app: Flask, slug: str, email: str) -> str:
    person = _person(app, email)
    r = support.post_form(client, f"/orgs/{slug}/admin/people/{person.id}/reset", {},
                          page=f"/orgs/{slug}/admin/people")
    found = re.search(r"/reset/([A-Za-z0-9_-]+)", r.get_data(as_text=True))
    assert r.status_code == 200 and found, r.get_data(as_text=True)[:2000]
    return found.group(1)


def test_a_reset_link_of_one_org_is_no_way_into_another(app: Flask, world: World) -> None:
    """ada belongs to acme and globex. acme's admin resets her password: acme's link sets
    it and confirms acme only; globex must invite her again; all her sessions end."""
    ada_before = _signed_in(app, world.ada)
    acme_admin = _signed_in(app, world.acme_admin)
    link = _reset_link(acme_admin, app, "acme", world.ada)
    holder = app.test_client()
    assert "Choose a new password" in holder.get(f"/reset/{link}").get_data(as_text=True)
    r = support.post_form(holder, f"/reset/{link}", {"password": NEW_PW, "confirm": NEW_PW})
    assert r.status_code == 302
    assert holder.get("/orgs/acme/wallet").status_code == 200
    assert holder.get("/orgs/globex/wallet").status_code == 404
    assert ada_before.get("/orgs/acme/wallet").status_code == 302  # signed out
    # Single use.
    again = support.post_form(app.test_client(), f"/reset/{link}",
                              {"password": "third password x", "confirm": "third password x"})
    assert again.status_code == 401
    # globex re-invites; ada (who now knows the new password) confirms with it.
    globex_admin = _signed_in(app, world.globex_admin)
    person = _person(app, world.ada)
    page = support.post_form(globex_admin, f"/orgs/globex/admin/people/{person.id}/invite", {},
                             page="/orgs/globex/admin/people")
    invite = INVITE.search(page.get_data(as_text=True))
    assert page.status_code == 200 and invite
    assert support.post_form(holder, f"/invite/{invite.group(1)}", {}).status_code == 302
    assert holder.get("/orgs/globex/wallet").status_code == 200


def test_a_reset_link_expires_after_an_hour(app: Flask, world: World) -> None:
    from wallet import clock

    fake = clock.FakeClock()
    clock.install(app, fake)
    link = _reset_link(_signed_in(app, world.acme_admin), app, "acme", world.bob)
    fake.advance(minutes=61)
    r = support.post_form(app.test_client(), f"/reset/{link}",
                          {"password": NEW_PW, "confirm": NEW_PW})
    assert r.status_code == 401
    _signed_in(app, world.bob)  # the old password still works


def test_an_engineer_cannot_issue_reset_links(app: Flask, world: World) -> None:
    bob = _signed_in(app, world.bob)
    person = _person(app, world.ada)
    token = support.csrf_token(bob, "/orgs/acme/wallet")
    r = bob.post(f"/orgs/acme/admin/people/{person.id}/reset", data={"csrf_token": token})
    assert r.status_code == 403


def test_reset_link_from_the_cli(app: Flask, world: World,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    r = support.run_cli(app, capsys, "person", "reset-link", "--org", "acme", "--email",
                        world.bob)
    assert r.exit_code == 0, r.err
    found = re.search(r"/reset/([A-Za-z0-9_-]+)", r.out)
    assert found and "1 hour" in r.out
    client = app.test_client()
    assert support.post_form(client, f"/reset/{found.group(1)}",
                             {"password": NEW_PW, "confirm": NEW_PW}).status_code == 302
    _signed_in(app, world.bob, NEW_PW)
    r = support.run_cli(app, capsys, "person", "reset-link", "--org", "globex", "--email",
                        world.bob)
    assert r.exit_code == 2 and "not a member" in r.err
