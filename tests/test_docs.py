"""The examples in docs/ work: the PyJWT snippet of docs/protocol.md verifies a real note."""

from __future__ import annotations

import io
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from tests.support import World
from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import notes as note_actions
from wallet.actions._base import Actor
from wallet.core import jose, ledger
from wallet.store import ledger as ledger_store
from wallet.store import people

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _snippet() -> str:
    text = (DOCS / "protocol.md").read_text()
    block = re.search(r"<!-- pyjwt-example:start -->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/protocol.md lost its PyJWT example"
    return block.group(1)


def test_pyjwt_example_verifies_a_real_note(app: Flask, world: World, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with app.app_context():
        s = db.session()
        key_actions.generate(s, slug="acme", actor=Actor.cli())
        org = people.org_by_slug(s, slug="acme")
        ada = people.person_by_email(s, email=world.ada)
        assert org and org.id and ada and ada.id
        ledger_store.post(s, org_id=org.id, posting=ledger.Posting(
            "pool", ledger.wallet(ada.id), 75_000_000, "USD", "grant", "docs"))
        s.commit()
        row = note_actions.export(s, slug="acme", email=world.ada, amount="75.00",
                                  holder_jwk=jose.public_jwk(Ed25519PrivateKey.generate()),
                                  actor=Actor.cli())
    (tmp_path / "note.txt").write_text(row.token + "\n")
    monkeypatch.chdir(tmp_path)
    client = app.test_client()

    def urlopen(url: str, *args: Any, **kwargs: Any) -> io.BytesIO:
        path = url.removeprefix(app.config["WALLET_BASE_URL"])
        return io.BytesIO(client.get(path).get_data())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    code = _snippet().replace("http://127.0.0.1:5000", app.config["WALLET_BASE_URL"])
    exec(compile(code, "docs/protocol.md", "exec"), {})  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "'value': '75.00'" in out and row.jti in out


def test_every_test_named_in_security_md_exists() -> None:
    """docs/security.md proves each defence by a test's name: each name must be real."""
    text = (DOCS / "security.md").read_text()
    root = DOCS.parent
    named, current = [], None
    for match in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", text):
        if match.group(1):
            current = match.group(1)
            assert (root / current).is_file(), f"docs/security.md names {current}"
        assert current is not None, "a `::name` needs a file named before it"
        name = match.group(2) or match.group(3)
        if name:
            named.append(name)
            source = (root / current).read_text()
            assert re.search(rf"def {name}\b", source), f"{current} has no test {name}"
    assert len(named) > 30
