"""Each refusal a portal or admin form shows lands next to its field, with its status.

These pin down what the views answer when they refuse, field by field (the texts are
the ones people read); the views compute them in small helpers that return a field error
or a result, and these answers must not change with how the views are written.
"""

from __future__ import annotations

import html
import io
import json
import re
import secrets
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests import notes_support, support
from tests.support import World


def _error(page: Any, field_id: str) -> str:
    """The error shown under the field `field_id`, or "" when there is none."""
    found = re.search(rf'<p class="error" id="{re.escape(field_id)}-error">(.*?)</p>',
                      page.get_data(as_text=True), re.S)
    return html.unescape(found.group(1)) if found else ""


def _form_errors(page: Any) -> str:
    found = re.search(r'<div class="form-errors" role="alert">(.*?)</div>',
                      page.get_data(as_text=True), re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip() if found else ""


def _signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    support.login(client, email)
    return client


# -- bringing credits in --------------------------------------------------------------


def _bring_file(client: FlaskClient, data: bytes) -> Any:
    token = support.csrf_token(client, "/orgs/acme/bring")
    # Encoded in memory: the test client spools a body over 500 KB to a temporary file
    # that it never closes (a ResourceWarning, an error in this suite).
    boundary, body = encode_multipart({
        "csrf_token": token, "w-passphrase": "a passphrase",
        "w-idempotency_key": secrets.token_hex(8),
        "w-wallet": FileStorage(io.BytesIO(data), filename="mine.ccwallet")})
    return client.post("/orgs/acme/bring", data=body,
                       content_type=f"multipart/form-data; boundary={boundary}")


def test_a_wallet_file_that_is_not_utf8_is_refused_next_to_the_file(
        app: Flask, world: World) -> None:
    answer = _bring_file(_signed_in(app, world.ada), b"\xff\xfe not a wallet")
    assert answer.status_code == 400
    assert _error(answer, "w-wallet") == "This is not a wallet file."


def test_a_wallet_file_over_4_mib_is_refused_next_to_the_file(app: Flask, world: World) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 5 * 1024 * 1024  # the view's own cap, not the request's
    answer = _bring_file(_signed_in(app, world.ada), b"x" * (4 * 1024 * 1024 + 1))
    assert answer.status_code == 400
    assert _error(answer, "w-wallet") == "The file is larger than 4 MiB."


def test_a_wallet_file_the_action_refuses_says_why_next_to_the_file(
        app: Flask, world: World) -> None:
    answer = _bring_file(_signed_in(app, world.ada), b'{"not": "a wallet"}')
    assert answer.status_code == 400
    assert _error(answer, "w-wallet")
    assert _error(answer, "w-passphrase") == ""


def test_pasted_presentations_that_are_not_json_are_refused_next_to_them(
        app: Flask, world: World) -> None:
    answer = support.post_form(_signed_in(app, world.ada), "/orgs/acme/bring", {
        "p-presentations": "{not json", "p-idempotency_key": "p1"})
    assert answer.status_code == 400
    assert _error(answer, "p-presentations") == (
        "Paste the JSON exactly as 'wallet note present' printed it.")


def test_pasted_presentations_the_action_refuses_say_why_next_to_them(
        app: Flask, world: World) -> None:
    answer = support.post_form(_signed_in(app, world.ada), "/orgs/acme/bring", {
        "p-presentations": "[]", "p-idempotency_key": "p2"})
    assert answer.status_code == 400
    assert _error(answer, "p-presentations")


# -- export ---------------------------------------------------------------------------


@pytest.fixture
def rich_ada(app: Flask, world: World) -> World:
    notes_support.generate_key(app)
    notes_support.give(app, "500.00")
    return world


def test_export_to_a_new_wallet_needs_a_passphrase(app: Flask, rich_ada: World) -> None:
    answer = support.post_form(_signed_in(app, rich_ada.ada), "/orgs/acme/export", {
        "amount": "10.00", "mode": "new", "idempotency_key": "x1"})
    assert answer.status_code == 400
    assert _error(answer, "passphrase") == "Choose a passphrase for the wallet file."


def test_export_to_a_key_that_is_not_json_is_refused_next_to_the_key(
        app: Flask, rich_ada: World) -> None:
    answer = support.post_form(_signed_in(app, rich_ada.ada), "/orgs/acme/export", {
        "amount": "10.00", "mode": "jwk", "holder_jwk": "{nope", "idempotency_key": "x2"})
    assert answer.status_code == 400
    assert _error(answer, "holder_jwk") == "Paste the JSON printed by 'wallet keys holder-new'."


def test_export_to_a_key_that_is_no_key_is_refused_next_to_the_key(
        app: Flask, rich_ada: World) -> None:
    answer = support.post_form(_signed_in(app, rich_ada.ada), "/orgs/acme/export", {
        "amount": "10.00", "mode": "jwk", "holder_jwk": '{"kty": "RSA"}',
        "idempotency_key": "x3"})
    assert answer.status_code == 400
    assert _error(answer, "holder_jwk")
    assert _error(answer, "amount") == ""


def test_export_of_more_than_the_balance_is_refused_next_to_the_amount(
        app: Flask, rich_ada: World) -> None:
    answer = support.post_form(_signed_in(app, rich_ada.ada), "/orgs/acme/export", {
        "amount": "9999.00", "mode": "new", "passphrase": "wallet pass 1",
        "confirm": "wallet pass 1", "idempotency_key": "x4"})
    assert answer.status_code == 400
    assert _error(answer, "amount")


def test_an_export_key_spent_on_other_values_says_the_export_was_made(
        app: Flask, rich_ada: World) -> None:
    _jwk_key, jwk = notes_support.holder()
    body = {"mode": "jwk", "holder_jwk": json.dumps(jwk),
            "idempotency_key": "same-key"}
    first = support.post_form(_signed_in(app, rich_ada.ada), "/orgs/acme/export",
                              {**body, "amount": "10.00"})
    assert first.status_code == 302
    # Another browser (its own session, so no record of the first): the action refuses.
    again = support.post_form(_signed_in(app, rich_ada.ada), "/orgs/acme/export",
                              {**body, "amount": "20.00"})
    assert again.status_code == 400
    assert _form_errors(again).startswith("This export was already made when you first sent")


# -- admin ----------------------------------------------------------------------------


def test_revoking_a_key_needs_its_typed_prefix(app: Flask, world: World) -> None:
    kid = notes_support.generate_key(app)
    admin = _signed_in(app, world.acme_admin)
    answer = support.post_form(admin, "/orgs/acme/admin/keys/revoke", {
        "kid": kid, "compromised_at": "2026-11-27T09:30:00Z", "confirm": "wrong"},
        page="/orgs/acme/admin/keys")
    assert answer.status_code == 400
    assert f"Type {kid[:8]} to confirm." in answer.get_data(as_text=True)


def test_revoking_a_key_at_a_time_that_is_no_time_says_so(app: Flask, world: World) -> None:
    kid = notes_support.generate_key(app)
    admin = _signed_in(app, world.acme_admin)
    answer = support.post_form(admin, "/orgs/acme/admin/keys/revoke", {
        "kid": kid, "compromised_at": "yesterday", "confirm": kid[:8]},
        page="/orgs/acme/admin/keys")
    assert answer.status_code == 400
    assert "The time" in answer.get_data(as_text=True)


@pytest.mark.parametrize(("path", "method", "text"), [
    ("/orgs/acme/admin/people/999999/invite", "post", "no such member"),
    ("/orgs/acme/admin/people/999999/reset", "post", None),
    ("/orgs/acme/admin/people/999999/terminate", "get", None),
])
def test_people_actions_on_someone_who_is_no_member_are_404(
        app: Flask, world: World, path: str, method: str, text: str | None) -> None:
    admin = _signed_in(app, world.acme_admin)
    if method == "post":
        answer = support.post_form(admin, path, {}, page="/orgs/acme/admin/people")
    else:
        answer = admin.get(path)
    assert answer.status_code == 404
    if text:
        assert text in answer.get_data(as_text=True)


def test_a_member_of_another_organisation_is_no_member_here(app: Flask, world: World) -> None:
    globex_admin = notes_support.person_id(app, world.globex_admin)
    admin = _signed_in(app, world.acme_admin)
    assert admin.get(f"/orgs/acme/admin/people/{globex_admin}/terminate").status_code == 404


def test_a_price_for_a_bad_model_name_is_refused_next_to_the_model(
        app: Flask, world: World) -> None:
    answer = support.post_form(_signed_in(app, world.acme_admin), "/orgs/acme/admin/prices", {
        "model": "not a model name!", "input_price": "1.00", "output_price": "2.00"})
    assert answer.status_code == 422
    assert _error(answer, "model")
    assert _error(answer, "input_price") == ""


def test_a_grant_for_a_stranger_is_refused_next_to_the_email(app: Flask, world: World) -> None:
    answer = support.post_form(_signed_in(app, world.acme_admin), "/orgs/acme/admin/grants", {
        "email": "nobody@example.test", "amount": "10.00", "idempotency_key": "g1"})
    assert answer.status_code == 422
    assert _error(answer, "email")


def test_an_unreadable_grants_file_is_refused_with_nothing_imported(
        app: Flask, world: World) -> None:
    answer = support.post_form(_signed_in(app, world.acme_admin), "/orgs/acme/admin/grants/import",
                               {"file": (io.BytesIO(b"\xff\xfe\x00"), "g.csv")},
                               page="/orgs/acme/admin/grants",
                               content_type="multipart/form-data")
    assert answer.status_code == 422
    assert _error(answer, "file").startswith("Nothing was imported: ")


# -- public verify page ---------------------------------------------------------------


def test_the_verify_page_asks_for_a_note_when_given_none(client: FlaskClient,
                                                         world: World) -> None:
    answer = support.post_form(client, "/orgs/acme/verify", {"note": ""})
    assert answer.status_code == 400
    assert _error(answer, "note") == "Paste a note, or upload its file."


def test_the_verify_page_refuses_an_upload_over_20_kb(client: FlaskClient,
                                                      world: World) -> None:
    answer = support.post_form(client, "/orgs/acme/verify",
                               {"upload": (io.BytesIO(b"e" * 20_001), "note.txt")},
                               content_type="multipart/form-data")
    assert answer.status_code == 400
    assert _error(answer, "upload") == "Upload a note file of at most 20 KB."
    assert _error(answer, "note") == ""
