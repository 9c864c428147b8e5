"""Settlement between two real instances (issue 15): acme on instance A owes globex on
instance B for a note B honoured; acme pays with `wallet settlement pay` over real HTTP,
both sides then agree; a payment for more than is owed is refused, the statement sent
again over the wire gets the same acknowledgement and posts nothing, a forged one is
refused, and `reconcile` finds nothing to say. Both backends.

The instances are the ones tests/test_two_instances.py starts (`wallet serve` each, its
own database, keystore and port).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import support
from tests.test_two_instances import (  # noqa: F401 - fixtures used by name
    ADA,
    PASSPHRASE,
    Instance,
    http,
    instances,
    second_db_url,
)
from wallet.core import jose

pytestmark = pytest.mark.slow


def _honour_one_note(a: Instance, b: Instance, tmp_path: Path, amount: str) -> None:
    """acme (A) issues a note to ada, globex (B) honours it: acme owes globex `amount`."""
    password = tmp_path / "password"
    password.write_text(support.PASSWORD + "\n")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    a.cli("org", "create", "acme", "--name", "Acme AI", "--admin-email", "admin@acme.test",
          "--password-file", str(password))
    a.cli("person", "add", "--org", "acme", "--email", ADA, "--password-file", str(password))
    a.cli("fund", "--org", "acme", "--amount", "10000.00", "--idempotency-key", "seed")
    a.cli("grant", "create", "--org", "acme", "--email", ADA, "--amount", "500.00")
    a.cli("keys", "generate", "--org", "acme")
    a_token = a.cli("token", "create", "--org", "acme", "--email", ADA).stdout.strip()
    b.cli("org", "create", "globex", "--name", "Globex", "--admin-email", "admin@globex.test",
          "--password-file", str(password))
    b.cli("person", "add", "--org", "globex", "--email", ADA, "--password-file", str(password))
    b.cli("keys", "generate", "--org", "globex")
    b_token = b.cli("token", "create", "--org", "globex", "--email", ADA).stdout.strip()
    b.cli("trust", "add", "--org", "globex", a.issuer("acme"))
    a.cli("trust", "add", "--org", "acme", b.issuer("globex"))

    key_file = tmp_path / "holder.key"
    holder_jwk = json.loads(b.cli("keys", "holder-new", "--out", str(key_file),
                                  "--passphrase-file", str(passphrase)).stdout)
    holder_jwk.pop("kid", None)
    status, exported = http("POST", f"{a.base}/api/v1/orgs/acme/me/notes",
                            {"amount": amount, "holder_jwk": holder_jwk},
                            {"Authorization": f"Bearer {a_token}", "Idempotency-Key": "exp-1"})
    assert status == 201, exported
    note_file = tmp_path / "note.txt"
    note_file.write_text(exported["note"] + "\n")
    status, issued = http("POST", f"{b.base}/api/v1/orgs/globex/nonces",
                          headers={"Authorization": f"Bearer {b_token}"})
    assert status == 201, issued
    presented = json.loads(b.cli(
        "note", "present", str(note_file), "--key", str(key_file), "--audience",
        b.issuer("globex"), "--nonce", issued["nonce"],
        "--passphrase-file", str(passphrase)).stdout)
    status, honoured = http("POST", f"{b.base}/api/v1/orgs/globex/honour", presented,
                            {"Authorization": f"Bearer {b_token}", "Idempotency-Key": "hon-1"})
    assert status == 200 and honoured["honoured"] == 1, honoured


def _lines(a: Instance, b: Instance) -> tuple[dict[str, str], dict[str, str]]:
    (a_line,) = json.loads(a.cli("settlement", "list", "--org", "acme", "--json").stdout)
    (b_line,) = json.loads(b.cli("settlement", "list", "--org", "globex", "--json").stdout)
    assert a_line["we_owe"] == b_line["they_owe"] and a_line["they_owe"] == b_line["we_owe"]
    return a_line, b_line


def test_paying_across_two_real_instances(instances: tuple[Instance, Instance],  # noqa: F811
                                          tmp_path: Path) -> None:
    a, b = instances
    _honour_one_note(a, b, tmp_path, "100.00")
    assert _lines(a, b)[0]["we_owe"] == "100.00"

    pay = ("settlement", "pay", "--org", "acme", "--counterparty", b.issuer("globex"),
           "--amount", "40.00", "--reference", "wire 1", "--json")
    paid = json.loads(a.cli(*pay).stdout)
    assert paid["outstanding"] == paid["we_owe"] == {"value": "60.00", "currency": "USD"}
    assert _lines(a, b)[0]["we_owe"] == "60.00"
    again = json.loads(a.cli(*pay).stdout)
    assert again == {**paid, "replayed": True}
    too_much = a.cli("settlement", "pay", "--org", "acme", "--counterparty",
                     b.issuer("globex"), "--amount", "60.01", "--reference", "wire 2", ok=False)
    assert too_much.returncode == 1 and "policy_rejected" in too_much.stderr
    assert _lines(a, b)[0]["we_owe"] == "60.00"

    # The statement sent again as it was (a replay over the wire): the same acknowledgement,
    # nothing posted twice; with a figure changed under its signature: refused.
    engine = sa.create_engine(a.env["WALLET_DATABASE_URL"])
    with engine.connect() as c:
        (sent,) = c.execute(sa.text("SELECT statement FROM settlement_statement"
                                    " WHERE role = 'sent'")).scalars().all()
    engine.dispose()
    endpoint = f"{b.base}/api/v1/orgs/globex/settlements"
    status, answer = http("POST", endpoint, {"statement": sent})
    assert status == 200 and "acknowledgement" in answer, answer
    assert _lines(a, b)[0]["we_owe"] == "60.00"
    head, body, signature = sent.split(".")
    claims = json.loads(jose.b64url_decode(body))
    claims["amount"]["value"] = "50.00"
    forged = ".".join([head, jose.b64url_encode(json.dumps(claims).encode()), signature])
    status, answer = http("POST", endpoint, {"statement": forged})
    assert status == 422 and answer["code"] == "bad_signature", answer
    assert _lines(a, b)[0]["we_owe"] == "60.00"

    for inst, slug, party in ((a, "acme", b.issuer("globex")), (b, "globex", a.issuer("acme"))):
        done = inst.cli("settlement", "reconcile", "--org", slug, "--counterparty", party,
                        "--json")
        assert json.loads(done.stdout)["agree"] is True
        assert inst.cli("ledger", "check").returncode == 0
    for inst in (a, b):
        assert "Traceback" not in inst.log(), inst.log()
