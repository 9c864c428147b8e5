"""The CSV upload page stays small however bad the file: the first 100 problems and a count."""

from __future__ import annotations

import io
import re

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests import support
from tests.grant_helpers import UNIT, balance, count
from tests.support import World
from wallet.models import Grant

GRANTS = "/orgs/acme/admin/grants"
HEADER = "email,amount,start,cliff_months,every,months\n"


def _upload(client: FlaskClient, text: bytes) -> tuple[int, str]:
    token = support.csrf_token(client, GRANTS)
    # Encoded in memory: the test client spools a body over 500 KB to a temporary file
    # that it never closes (a ResourceWarning, an error in this suite).
    boundary, body = encode_multipart({"csrf_token": token, "file": FileStorage(
        io.BytesIO(text), filename="grants.csv", content_type="text/csv")})
    r = client.post(f"{GRANTS}/import", data=body,
                    content_type=f"multipart/form-data; boundary={boundary}")
    return r.status_code, r.get_data(as_text=True)


def test_600000_problems_render_the_first_100_and_the_count(
        app: Flask, client: FlaskClient, world: World) -> None:
    """Regression: this 1.2 MB file rendered a 66 MB page listing every problem."""
    support.login(client, world.acme_admin)
    status, html = _upload(client, (HEADER + "x,x,x,x,x,x\n" * 100_000).encode())
    assert status == 422
    assert len(html) < 100_000, f"{len(html):,} characters"
    table = html[html.index('data-testid="row-errors"'):]
    assert len(re.findall(r"<tr><td>\d+</td>", table)) == 100
    assert "600,000 problems" in html and "the first 100 are listed" in html
    assert "Nothing was imported" in html
    assert count(app, Grant.__table__) == 0 and balance(app, "pool") == 250_000 * UNIT


def test_a_short_report_lists_everything_without_a_count(
        app: Flask, client: FlaskClient, world: World) -> None:
    support.login(client, world.acme_admin)
    status, html = _upload(client, (HEADER + "nobody@acme.test,ten,,,,\n").encode())
    assert status == 422
    assert "2 problems. Nothing was imported." in html
    assert "first 100" not in html
    table = html[html.index('data-testid="row-errors"'):]
    assert "<td>2</td><td>nobody@acme.test is not a member of acme</td>" in table
