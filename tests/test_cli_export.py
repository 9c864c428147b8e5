"""`wallet note export`: a note file is never overwritten and a re-run never exports twice.

Regressions: `--out FILE` silently replaced an earlier note file whose amount had already
left the wallet, and running the command again exported again. Both databases.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests import notes_support as ns
from tests.support import World, run_cli
from wallet import db
from wallet.actions import notes as note_actions
from wallet.actions._base import Actor
from wallet.models import Note


@pytest.fixture
def acme(app: Flask, world: World) -> World:
    ns.generate_key(app)
    ns.give(app, "500.00")
    ns.give(app, "50.00", email=world.bob)
    return world


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory of the operator's files (tmp_path also holds the app's instance)."""
    path = tmp_path / "files"
    path.mkdir()
    return path


@pytest.fixture
def jwk_file(files: Path) -> Path:
    path = files / "holder.jwk"
    path.write_text(json.dumps(ns.holder()[1]))
    return path


def _notes(app: Flask) -> int:
    with app.app_context():
        return int(db.session().execute(sa.select(sa.func.count()).select_from(Note))
                   .scalar_one())


def _export(app: Flask, capsys: pytest.CaptureFixture[str], jwk_file: Path,
            *extra: str, amount: str = "100.00", email: str = ns.ADA) -> Any:
    return run_cli(app, capsys, "note", "export", "--org", "acme", "--email", email,
                   "--amount", amount, "--holder-jwk", str(jwk_file), *extra)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wallet: error: "), err
    return lines[0]


def test_out_is_never_overwritten_and_nothing_is_exported_when_it_exists(
        app: Flask, acme: World, files: Path, jwk_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = files / "ada.note"
    r = _export(app, capsys, jwk_file, "--out", str(out))
    assert r.exit_code == 0, r.err
    first = out.read_text()
    assert first.strip().endswith("~") and first.endswith("\n")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    r = _export(app, capsys, jwk_file, "--out", str(out), amount="50.00")
    assert r.exit_code == 2, (r.out, r.err)
    assert "exists" in _one_line(r.err) and r.out == ""
    assert out.read_text() == first  # the earlier note is still there...
    assert _notes(app) == 1 and ns.balance(app, "wallet") == 400 * ns.UNIT  # ...and alone
    assert sorted(p.name for p in files.iterdir()) == ["ada.note", "holder.jwk"]


@pytest.mark.parametrize("where", ["no such directory", "a directory", "under a file",
                                   "a dangling link"])
def test_an_unusable_out_is_refused_before_anything_is_exported(
        app: Flask, acme: World, files: Path, jwk_file: Path, where: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    if where == "no such directory":
        out = files / "missing" / "n.note"
    elif where == "a directory":
        out = files / "dir"
        out.mkdir()
    elif where == "under a file":
        out = jwk_file / "n.note"
    else:
        out = files / "link.note"
        out.symlink_to(files / "elsewhere.note")
    r = _export(app, capsys, jwk_file, "--out", str(out))
    assert r.exit_code == 2, (r.out, r.err)
    _one_line(r.err)
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert _notes(app) == 0 and ns.balance(app, "wallet") == 500 * ns.UNIT
    assert not (files / "elsewhere.note").exists()
    assert not [p for p in files.iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_rerun_with_the_same_idempotency_key_gives_back_the_same_note(
        app: Flask, acme: World, files: Path, jwk_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = files / "ada.note"
    r = _export(app, capsys, jwk_file, "--out", str(out), "--idempotency-key", "q3-ada",
                "--json")
    assert r.exit_code == 0, r.err
    made = json.loads(r.out)
    assert made["created"] is True and out.read_text() == made["note"] + "\n"
    # The same command again (a script retried, a terminal's history): nothing new.
    r = _export(app, capsys, jwk_file, "--out", str(out), "--idempotency-key", "q3-ada",
                "--json")
    assert r.exit_code == 0, r.err
    again = json.loads(r.out)
    assert again["created"] is False and again["jti"] == made["jti"]
    assert again["note"] == made["note"] and out.read_text() == made["note"] + "\n"
    r = _export(app, capsys, jwk_file, "--idempotency-key", "q3-ada")
    assert r.exit_code == 0 and r.out.strip() == made["note"]
    r = _export(app, capsys, jwk_file, "--out", str(out), "--idempotency-key", "q3-ada")
    assert r.exit_code == 0 and "already exported" in r.out and made["jti"] in r.out
    assert _notes(app) == 1 and ns.balance(app, "wallet") == 400 * ns.UNIT

    # Other arguments under the same key: refused, nothing moves, the file stays.
    for extra in (["--amount", "100.01"], ["--holder-jwk", str(files / "other.jwk")]):
        (files / "other.jwk").write_text(json.dumps(ns.holder()[1]))
        r = run_cli(app, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                    "--amount", "100.00", "--holder-jwk", str(jwk_file),
                    "--idempotency-key", "q3-ada", *extra)
        assert r.exit_code == 2, (extra, r.err)
        assert _one_line(r.err).endswith("[idempotency_conflict]")
    # A re-run whose file holds another note is refused too: the file is never replaced.
    other = files / "other.note"
    other.write_text("something else\n")
    r = _export(app, capsys, jwk_file, "--out", str(other), "--idempotency-key", "q3-ada")
    assert r.exit_code == 2 and "exists" in _one_line(r.err)
    assert other.read_text() == "something else\n"
    # Keys are per person: bob's "q3-ada" is his own export.
    r = _export(app, capsys, jwk_file, "--idempotency-key", "q3-ada", "--json",
                amount="10.00", email=acme.bob)
    assert r.exit_code == 0, r.err
    assert json.loads(r.out)["created"] is True and json.loads(r.out)["jti"] != made["jti"]
    assert _notes(app) == 2 and ns.balance(app, "wallet") == 400 * ns.UNIT


def test_concurrent_exports_with_one_key_make_one_note_and_both_get_it(
        app: Flask, acme: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests pass the "already exported?" check before either commits.

    Regression (PostgreSQL): the second one's ledger insert met the first one's key and
    was answered `idempotency_conflict`, although it was the very same request.
    """
    jwk = ns.holder()[1]
    both_checked = threading.Barrier(2)
    real_prior = note_actions._prior_export

    def prior_then_wait(*args: Any, **kwargs: Any) -> Any:
        found = real_prior(*args, **kwargs)
        # On SQLite the second request waits for the first's write lock instead.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait(timeout=2)
        return found

    monkeypatch.setattr(note_actions, "_prior_export", prior_then_wait)
    results: list[Any] = []

    def export() -> None:
        try:
            with app.app_context():
                row = note_actions.export(db.session(), slug="acme", email=ns.ADA,
                                          amount="25.00", holder_jwk=jwk, actor=Actor.cli(),
                                          request_key="same-request")
                results.append(row.jti)
        except Exception as err:  # reported by the assertion below
            results.append(err)

    threads = [threading.Thread(target=export) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and all(isinstance(r, str) for r in results), results
    assert results[0] == results[1]
    assert _notes(app) == 1 and ns.balance(app, "wallet") == 475 * ns.UNIT


def test_a_note_that_cannot_be_written_after_the_export_is_printed_not_lost(
        app: Flask, acme: World, files: Path, jwk_file: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from wallet.cli import base

    def disk_full(_src: str, _dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(base.os, "link", disk_full)
    out = files / "ada.note"
    r = _export(app, capsys, jwk_file, "--out", str(out), "--idempotency-key", "k1")
    assert r.exit_code == 2
    line = _one_line(r.err)
    assert "was exported but could not be written" in line and "--idempotency-key k1" in line
    token = r.out.strip()
    assert token.endswith("~") and not out.exists()
    assert not [p for p in files.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    r = _export(app, capsys, jwk_file, "--out", str(out), "--idempotency-key", "k1")
    assert r.exit_code == 0, r.err
    assert out.read_text() == token + "\n"  # the same note, now in its file
    assert _notes(app) == 1 and ns.balance(app, "wallet") == 400 * ns.UNIT


def test_a_deeply_nested_holder_file_is_one_line_and_exit_2(
        app: Flask, acme: World, files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = files / "deep.jwk"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    result = _export(app, capsys, deep)
    assert result.exit_code == 2, result.err
    assert "is not a JSON JWK" in _one_line(result.err)
    assert _notes(app) == 0
