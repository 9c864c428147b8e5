"""`wallet note inspect | verify | present`: output, exit codes 0/1/2 (docs/protocol.md §8
"Error codes"), one line on stderr for every refusal. Tests marked "pure" need no app and
no database."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import notes_support as ns
from tests.support import World, run_cli
from wallet.core import jose, notes, walletfile
from wallet.core.money import Money

ISSUER = "https://issuer.example/orgs/acme"
PASSPHRASE = "holder passphrase"


def _one_line(err: str, code: str | None = None) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wallet: error: "), err
    assert "Traceback" not in err
    if code is not None:
        assert lines[0].endswith(f"[{code}]"), lines[0]
    return lines[0]


@dataclass
class Offline:
    """An issuer that exists only here: its key, its JWKS file, a holder and a note."""

    key: Ed25519PrivateKey
    holder: Ed25519PrivateKey
    jwks_file: Path
    tmp: Path

    def note(self, *, iat: int | None = None, exp: int | None = None,
             holder: Ed25519PrivateKey | None = None, amount: int = 100_000_000) -> str:
        now = int(time.time()) if iat is None else iat
        return notes.issue(
            issuer=ISSUER, jti=notes.new_jti(secrets.token_bytes(16)), iat=now,
            exp=now + 86_400 if exp is None else exp, amount=Money(amount, "USD"),
            holder_jwk=jose.public_jwk(holder or self.holder),
            status_uri=f"{ISSUER}/status/1", status_idx=secrets.randbelow(131_072),
            kid=jose.thumbprint(jose.public_jwk(self.key)), key=self.key)

    def file(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def key_file(self, key: Ed25519PrivateKey | None = None, name: str = "holder.key") -> Path:
        return ns.holder_key_file(self.tmp / name, key or self.holder, PASSPHRASE)

    def pass_file(self, value: str = PASSPHRASE) -> Path:
        return self.file(f"pass-{secrets.token_hex(3)}", value + "\n")


@pytest.fixture
def offline(tmp_path: Path) -> Offline:
    key = Ed25519PrivateKey.generate()
    jwk = jose.public_jwk(key)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": jose.thumbprint(jwk), "use": "sig",
                                          "alg": "EdDSA"}]}))
    return Offline(key, Ed25519PrivateKey.generate(), jwks, tmp_path)


# -- inspect (pure) ----------------------------------------------------------------------


def test_inspect_decodes_a_note_without_verifying(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    expired = offline.note(iat=1_600_000_000, exp=1_600_086_400)
    r = run_cli(None, capsys, "note", "inspect", str(offline.file("old.note", expired + "\n")))
    assert r.exit_code == 0, r.err
    decoded = json.loads(r.out)
    assert set(decoded) == {"header", "claims"}
    assert decoded["header"]["typ"] == "dc+sd-jwt"
    assert decoded["claims"] == ns.parts(expired)[1] and decoded["claims"]["exp"] == 1_600_086_400
    # Not even the signature is checked: a tampered note still decodes.
    h, p, s = expired[:-1].split(".")
    tampered = f"{h}.{p}.{s[:20]}{'A' if s[20] != 'A' else 'B'}{s[21:]}~"
    r = run_cli(None, capsys, "note", "inspect", str(offline.file("bad.note", tampered)))
    assert r.exit_code == 0 and json.loads(r.out)["claims"] == decoded["claims"]


def test_inspect_decodes_a_presentation_and_several_notes(
        offline: Offline, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    note = offline.note()
    presentation = notes.present(note, holder_key=offline.holder, audience="https://v.example",
                                 nonce="n" * 43, iat=1_700_000_000)
    r = run_cli(None, capsys, "note", "inspect", str(offline.file("p.txt", presentation)))
    assert r.exit_code == 0, r.err
    decoded = json.loads(r.out)
    assert decoded["kb_jwt"]["header"] == {"alg": "EdDSA", "typ": "kb+jwt"}
    assert decoded["kb_jwt"]["claims"]["aud"] == "https://v.example"
    assert decoded["claims"]["iss"] == ISSUER
    r = run_cli(None, capsys, "note", "inspect",
                str(offline.file("two.txt", f"{note}\n{offline.note()}\n")))
    assert r.exit_code == 0 and len(json.loads(r.out)) == 2
    # Standard input works too.
    monkeypatch.setattr("sys.stdin", io.StringIO(note))
    r = run_cli(None, capsys, "note", "inspect", "-")
    assert r.exit_code == 0 and json.loads(r.out)["claims"]["iss"] == ISSUER


def test_inspect_decodes_a_wallet_file_and_hides_the_key(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    wallet = walletfile.create(offline.holder, PASSPHRASE, [offline.note(), offline.note()],
                               salt=secrets.token_bytes(16), iv=secrets.token_bytes(16),
                               rounds=ns.FAST_ROUNDS)
    r = run_cli(None, capsys, "note", "inspect",
                str(offline.file("mine.ccwallet", wallet.to_json())))
    assert r.exit_code == 0, r.err
    decoded = json.loads(r.out)
    assert decoded["format"] == "compute-credit-wallet/1"
    assert decoded["holder_key"] == "(encrypted)"
    assert decoded["holder_jwk"] == jose.public_jwk(offline.holder)
    assert decoded["holder_jkt"] == jose.thumbprint(jose.public_jwk(offline.holder))
    assert [n["claims"]["iss"] for n in decoded["notes"]] == [ISSUER, ISSUER]
    assert "ENCRYPTED" not in r.out


def test_inspect_refuses_unreadable_or_non_token_input(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (str(offline.tmp / "missing.note"), str(offline.tmp)):
        r = run_cli(None, capsys, "note", "inspect", path)
        assert r.exit_code == 2, (path, r.err)
        _one_line(r.err)
    not_utf8 = offline.tmp / "binary.note"
    not_utf8.write_bytes(b"\xff\xfe\x00garbage")
    r = run_cli(None, capsys, "note", "inspect", str(not_utf8))
    assert r.exit_code == 2
    _one_line(r.err)
    wallet = offline.file("broken.ccwallet", '{"format": "compute-credit-wallet/9"}')
    r = run_cli(None, capsys, "note", "inspect", str(wallet))
    assert r.exit_code == 2
    _one_line(r.err, "malformed")


def test_inspect_of_something_that_is_not_a_token_is_bad_input(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    # Inspect verifies nothing, so a file that holds no token is bad input (exit 2),
    # not a failed verification (exit 1) — docs/protocol.md §8 "Error codes".
    r = run_cli(None, capsys, "note", "inspect", str(offline.file("junk.txt", "hello world\n")))
    assert r.exit_code == 2, (r.exit_code, r.err)
    _one_line(r.err, "malformed")


# -- verify offline against a JWKS file (pure) -------------------------------------------


def test_verify_offline_reports_status_as_not_checked(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    note_file = offline.file("n.note", offline.note())
    r = run_cli(None, capsys, "note", "verify", str(note_file), "--jwks", str(offline.jwks_file),
                "--json")
    assert r.exit_code == 0, r.err
    report = json.loads(r.out)
    assert report["valid"] is True and report["errors"] == []
    assert report["checks"][-1] == {"name": "status", "ok": None, "note": "not checked offline"}
    # Any JWKS holding the key would do: offline, nothing says the issuer is to be trusted.
    trusted = next(c for c in report["checks"] if c["name"] == "issuer_trusted")
    assert trusted["ok"] is None and "JWKS given" in trusted["note"]
    assert all(c["ok"] is True for c in report["checks"][:-1] if c is not trusted)
    assert report["note"]["iss"] == ISSUER
    r = run_cli(None, capsys, "note", "verify", str(note_file), "--jwks", str(offline.jwks_file))
    assert r.exit_code == 0
    assert "VALID" in r.out and "not checked offline" in r.out and "100.00 USD" in r.out


@pytest.mark.parametrize("tamper", ["signature", "amount", "expired", "other key", "alg none"])
def test_verify_offline_refuses_a_tampered_note_with_exit_1(
        offline: Offline, tamper: str, capsys: pytest.CaptureFixture[str]) -> None:
    note = offline.note()
    h, p, s = note[:-1].split(".")
    expected = {"signature": "bad_signature", "amount": "bad_signature",
                "expired": "expired", "other key": "unknown_key", "alg none": "unsupported_alg"}
    if tamper == "signature":
        note = f"{h}.{p}.{s[:30]}{'A' if s[30] != 'A' else 'B'}{s[31:]}~"
    elif tamper == "amount":
        claims = ns.parts(note)[1]
        claims["amount"]["value"] = "999.00"
        note = f"{h}.{ns.b64(json.dumps(claims).encode())}.{s}~"
    elif tamper == "expired":
        note = offline.note(iat=1_600_000_000, exp=1_600_086_400)
    elif tamper == "other key":
        note = ns.resign(note, Ed25519PrivateKey.generate(), header={"kid": "B" * 43})
    else:
        none = ns.b64(json.dumps({"alg": "none", "typ": "dc+sd-jwt"}).encode())
        note = f"{none}.{p}.~"
    r = run_cli(None, capsys, "note", "verify", str(offline.file("t.note", note)),
                "--jwks", str(offline.jwks_file), "--json")
    assert r.exit_code == 1, (r.out, r.err)
    report = json.loads(r.out)
    assert report["valid"] is False
    assert [e["code"] for e in report["errors"]] == [expected[tamper]]
    r = run_cli(None, capsys, "note", "verify", str(offline.file("t.note", note)),
                "--jwks", str(offline.jwks_file))
    assert r.exit_code == 1 and "INVALID" in r.out and expected[tamper] in r.out


def test_verify_needs_exactly_one_of_org_and_jwks_and_a_readable_file(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    note_file = offline.file("n.note", offline.note())
    for extra in ([], ["--org", "acme", "--jwks", str(offline.jwks_file)]):
        r = run_cli(None, capsys, "note", "verify", str(note_file), *extra)
        assert r.exit_code == 2, (extra, r.err)
        _one_line(r.err)
    for path in (str(offline.tmp / "nope.note"), str(offline.tmp)):
        r = run_cli(None, capsys, "note", "verify", path, "--jwks", str(offline.jwks_file))
        assert r.exit_code == 2, r.err
        _one_line(r.err)
    r = run_cli(None, capsys, "note", "verify", str(note_file), "--jwks",
                str(offline.tmp / "missing-jwks.json"))
    assert r.exit_code == 2
    _one_line(r.err)
    r = run_cli(None, capsys, "note", "verify", str(note_file), "--jwks",
                str(offline.file("bad-jwks.json", '{"keys": [{"kty": "RSA"}]}')))
    assert r.exit_code == 2
    _one_line(r.err, "malformed")


# -- present (pure) ----------------------------------------------------------------------


def test_present_signs_kb_jwts_for_the_audience_and_nonce(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = offline.note(), offline.note()
    nonce = secrets.token_urlsafe(32)
    audience = "https://verifier.example/orgs/globex"
    r = run_cli(None, capsys, "note", "present",
                str(offline.file("notes.txt", f"{first}\n{second}\n")),
                "--key", str(offline.key_file()), "--audience", audience, "--nonce", nonce,
                "--passphrase-file", str(offline.pass_file()))
    assert r.exit_code == 0, r.err
    out = json.loads(r.out)
    assert set(out) == {"presentations"} and len(out["presentations"]) == 2
    for note, presentation in zip((first, second), out["presentations"], strict=True):
        assert presentation.startswith(note) and presentation.count("~") == 1
        kb = ns.kb_independently_verified(presentation, jose.public_jwk(offline.holder),
                                          audience=audience)
        assert kb["nonce"] == nonce and kb["aud"] == audience
        # sd_hash by hand: SHA-256 over the ASCII "<issuer-signed JWT>~".
        assert kb["sd_hash"] == ns.b64(hashlib.sha256(note.encode("ascii")).digest())
        assert abs(kb["iat"] - time.time()) < 30
        header = json.loads(jose.b64url_decode(presentation.rpartition("~")[2].split(".")[0]))
        assert header == {"alg": "EdDSA", "typ": "kb+jwt"}
    assert PASSPHRASE not in r.out + r.err
    # Offline verification of the presentation takes the KB-JWT's own audience.
    r = run_cli(None, capsys, "note", "verify",
                str(offline.file("p.txt", out["presentations"][0])),
                "--jwks", str(offline.jwks_file), "--json")
    assert r.exit_code == 0, r.out
    names = [c["name"] for c in json.loads(r.out)["checks"]]
    assert "holder_binding" in names and names[-1] == "status"


def test_what_present_writes_verify_and_inspect_read_back(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    notes_file = offline.file("notes.txt", f"{offline.note()}\n{offline.note()}\n")
    r = run_cli(None, capsys, "note", "present", str(notes_file), "--key",
                str(offline.key_file()), "--audience", "https://verifier.example/orgs/globex",
                "--nonce", "n" * 43, "--passphrase-file", str(offline.pass_file()))
    assert r.exit_code == 0, r.err
    sent = offline.file("presented.json", r.out)  # the file as the engineer saved it
    checked = run_cli(None, capsys, "note", "verify", str(sent), "--jwks",
                      str(offline.jwks_file), "--json")
    assert checked.exit_code == 0, checked.out + checked.err
    assert [report["valid"] for report in json.loads(checked.out)] == [True, True]
    inspected = run_cli(None, capsys, "note", "inspect", str(sent))
    assert inspected.exit_code == 0, inspected.err
    assert [item["kb_jwt"]["claims"]["nonce"] for item in json.loads(inspected.out)] == [
        "n" * 43] * 2
    for bad, says in (('{"presentations": "x"}', "not what 'wallet note present' writes"),
                      ("{not json", "neither one note a line nor JSON"),
                      ('{"presentations": []}', "holds no note or presentation")):
        r = run_cli(None, capsys, "note", "verify", str(offline.file("bad.json", bad)),
                    "--jwks", str(offline.jwks_file))
        assert r.exit_code == 2 and says in r.err, (bad, r.err)


def test_present_with_a_wrong_passphrase_is_one_line(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(None, capsys, "note", "present", str(offline.file("n.note", offline.note())),
                "--key", str(offline.key_file()), "--audience", ISSUER, "--nonce", "n" * 43,
                "--passphrase-file", str(offline.pass_file("not the passphrase")))
    assert r.exit_code == 2
    _one_line(r.err, "bad_passphrase")
    assert r.out == "" and "not the passphrase" not in r.err


def test_present_refuses_a_note_bound_to_another_holder(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = offline.note(holder=Ed25519PrivateKey.generate())
    r = run_cli(None, capsys, "note", "present",
                str(offline.file("n.note", f"{offline.note()}\n{foreign}\n")),
                "--key", str(offline.key_file()), "--audience", ISSUER, "--nonce", "n" * 43,
                "--passphrase-file", str(offline.pass_file()))
    assert r.exit_code == 2 and r.out == ""
    assert "another holder key" in _one_line(r.err)


def test_present_from_a_wallet_file_needs_no_key_file(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    held = [offline.note(), offline.note()]
    wallet = walletfile.create(offline.holder, PASSPHRASE, held, salt=secrets.token_bytes(16),
                               iv=secrets.token_bytes(16), rounds=ns.FAST_ROUNDS)
    wallet_file = offline.file("mine.ccwallet", wallet.to_json())
    r = run_cli(None, capsys, "note", "present", str(wallet_file), "--audience", ISSUER,
                "--nonce", "m" * 43, "--passphrase-file", str(offline.pass_file()))
    assert r.exit_code == 0, r.err
    presentations = json.loads(r.out)["presentations"]
    assert [p.rpartition("~")[0] + "~" for p in presentations] == held
    for presentation in presentations:
        ns.kb_independently_verified(presentation, wallet.holder_jwk, audience=ISSUER)
    r = run_cli(None, capsys, "note", "present", str(wallet_file), "--audience", ISSUER,
                "--nonce", "m" * 43, "--passphrase-file", str(offline.pass_file("wrong one")))
    assert r.exit_code == 2
    _one_line(r.err, "bad_passphrase")
    # A bare note without --key is a usage error.
    r = run_cli(None, capsys, "note", "present", str(offline.file("n.note", held[0])),
                "--audience", ISSUER, "--nonce", "m" * 43,
                "--passphrase-file", str(offline.pass_file()))
    assert r.exit_code == 2
    _one_line(r.err)


# -- verify as an organisation (both databases) ------------------------------------------


@pytest.fixture
def acme(app: Flask, world: World) -> World:
    ns.generate_key(app)
    ns.give(app, "500.00")
    return world


def test_verify_as_the_issuer_exit_0_valid_and_1_revoked(
        app: Flask, acme: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept, revoked = ns.export(app, "100.00"), ns.export(app, "20.00")
    ns.revoke_note(app, revoked.jti, "mistake")
    kept_file, revoked_file = tmp_path / "kept.note", tmp_path / "revoked.note"
    kept_file.write_text(kept.token + "\n")
    revoked_file.write_text(revoked.token + "\n")

    r = run_cli(app, capsys, "note", "verify", str(kept_file), "--org", "acme")
    assert r.exit_code == 0, r.out + r.err
    assert "VALID" in r.out and "100.00 USD" in r.out and kept.jti in r.out
    for name in ("format", "algorithm", "issuer_trusted", "key", "signature", "validity",
                 "amount", "status"):
        assert f"ok  {name}" in r.out, name

    r = run_cli(app, capsys, "note", "verify", str(revoked_file), "--org", "acme", "--json")
    assert r.exit_code == 1
    report = json.loads(r.out)
    assert report["valid"] is False and [e["code"] for e in report["errors"]] == ["revoked"]
    assert report["checks"][-1] == {"name": "status", "ok": False}
    r = run_cli(app, capsys, "note", "verify", str(revoked_file), "--org", "acme")
    assert r.exit_code == 1 and "INVALID" in r.out and "FAIL status" in r.out
    assert "revoked:" in r.out

    both = tmp_path / "both.txt"
    both.write_text(f"{kept.token}\n{revoked.token}\n")
    r = run_cli(app, capsys, "note", "verify", str(both), "--org", "acme", "--json")
    assert r.exit_code == 1 and [x["valid"] for x in json.loads(r.out)] == [True, False]

    r = run_cli(app, capsys, "note", "verify", str(kept_file), "--org", "nope")
    assert r.exit_code == 2
    _one_line(r.err, "not_found")


def test_verify_offline_against_the_exported_jwks(
        app: Flask, client: FlaskClient, acme: World, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    note = ns.export(app, "100.00")
    ns.revoke_note(app, note.jti, "offline cannot know")
    r = run_cli(app, capsys, "keys", "export-jwks", "--org", "acme")
    jwks_file = tmp_path / "acme.jwks.json"
    jwks_file.write_text(r.out)
    note_file = tmp_path / "n.note"
    note_file.write_text(note.token)
    r = run_cli(None, capsys, "note", "verify", str(note_file), "--jwks", str(jwks_file),
                "--json")
    assert r.exit_code == 0, r.out  # offline, the revocation is invisible...
    assert json.loads(r.out)["checks"][-1]["ok"] is None  # ...and said to be
    r = run_cli(app, capsys, "note", "verify", str(note_file), "--org", "acme")
    assert r.exit_code == 1


def test_present_then_verify_a_presentation_as_the_audience(
        app: Flask, client: FlaskClient, acme: World, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    key, _jwk = ns.holder()
    note = ns.export(app, "100.00", key=key)
    key_file = ns.holder_key_file(tmp_path / "h.key", key, PASSPHRASE)
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE + "\n")
    note_file = tmp_path / "n.note"
    note_file.write_text(note.token)
    nonce = ns.new_nonce(client)
    r = run_cli(None, capsys, "note", "present", str(note_file), "--key", str(key_file),
                "--audience", ns.ACME, "--nonce", nonce, "--passphrase-file", str(pass_file))
    assert r.exit_code == 0, r.err
    presentations = json.loads(r.out)["presentations"]
    report = ns.verify(client, {"presentations": presentations})
    assert report["valid"] is True, report
    presentation_file = tmp_path / "p.txt"
    presentation_file.write_text(presentations[0])
    r = run_cli(app, capsys, "note", "verify", str(presentation_file), "--org", "acme",
                "--json")
    assert r.exit_code == 0, r.out
    assert [c["name"] for c in json.loads(r.out)["checks"]][-4:] == [
        "holder_binding", "audience", "nonce", "status"]
    # Presented to someone else: acme refuses it as not meant for acme.
    r = run_cli(None, capsys, "note", "present", str(note_file), "--key", str(key_file),
                "--audience", ns.GLOBEX, "--nonce", nonce, "--passphrase-file", str(pass_file))
    presentation_file.write_text(json.loads(r.out)["presentations"][0])
    r = run_cli(app, capsys, "note", "verify", str(presentation_file), "--org", "acme",
                "--json")
    assert r.exit_code == 1
    assert [e["code"] for e in json.loads(r.out)["errors"]] == ["audience_mismatch"]


# -- nothing to check is never success (pure) ---------------------------------------------


def _command(offline: Offline, command: str, path: str, *extra: str) -> list[str]:
    if command == "verify":
        return ["note", "verify", path, "--jwks", str(offline.jwks_file), *extra]
    if command == "present":
        return ["note", "present", path, "--key", str(offline.key_file()), "--audience",
                ISSUER, "--nonce", "n" * 43, "--passphrase-file", str(offline.pass_file())]
    return ["note", "inspect", path]


@pytest.mark.parametrize("content", ["", "\n", " \n\t\r\n\n"], ids=["empty", "newline", "blank"])
@pytest.mark.parametrize("command", ["verify", "inspect", "present"])
def test_a_file_with_no_items_is_bad_input_never_exit_0(
        offline: Offline, command: str, content: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: `verify && credit` accepted a truncated (empty) download with exit 0."""
    path = offline.file("download.note", content)
    for extra in ([], ["--json"]) if command == "verify" else ([],):
        r = run_cli(None, capsys, *_command(offline, command, str(path), *extra))
        assert r.exit_code == 2, (command, extra, r.out, r.err)
        assert "holds no note" in _one_line(r.err, "malformed")
        assert r.out == ""
    monkeypatch.setattr("sys.stdin", io.StringIO(content))  # the same through a pipe
    r = run_cli(None, capsys, *_command(offline, command, "-"))
    assert r.exit_code == 2 and r.out == "", (r.out, r.err)
    assert "standard input holds no note" in _one_line(r.err, "malformed")


def test_a_wallet_file_without_notes_is_bad_input(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    empty = walletfile.create(offline.holder, PASSPHRASE, [], salt=secrets.token_bytes(16),
                              iv=secrets.token_bytes(16), rounds=ns.FAST_ROUNDS)
    path = str(offline.file("empty.ccwallet", empty.to_json()))
    for command in ("verify", "inspect", "present"):
        r = run_cli(None, capsys, *_command(offline, command, path))
        assert r.exit_code == 2 and r.out == "", (command, r.out, r.err)
        assert "holds no notes" in _one_line(r.err, "malformed")


def test_a_passphrase_file_that_is_not_text_is_one_line(
        offline: Offline, capsys: pytest.CaptureFixture[str]) -> None:
    binary = offline.tmp / "pass.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    r = run_cli(None, capsys, "note", "present", str(offline.file("n.note", offline.note())),
                "--key", str(offline.key_file()), "--audience", ISSUER, "--nonce", "n" * 43,
                "--passphrase-file", str(binary))
    assert r.exit_code == 2 and r.out == "", (r.out, r.err)
    assert "not UTF-8" in _one_line(r.err)
