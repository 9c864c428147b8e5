"""Status lists at scale, with the default settings (issue #11, hole 4).

Before the bound, an issuer filled a 131,072-entry list up to half; once some 7,600 of
its notes were dead the list token passed 16 KiB and every verifier refused every note
in it (`issuer_unavailable`). Here notes are placed by the issuer's own allocator
(`_list_with_room`, what every export calls) and written in bulk through the store;
real exports, revocations and an honour run through the real actions and routes, and
the verifier reads each list through its real path (`Directory.status_list` over the
in-process transport).

`WALLET_TEST_DEAD_NOTES` (default 100000) sets the size of the large test.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import status_support as ss
from wallet import db
from wallet.actions import notes as note_actions
from wallet.actions._base import Actor
from wallet.core import jose, notes, status
from wallet.core.errors import AlreadyRedeemed, Revoked
from wallet.models import Note
from wallet.store import keys as key_store
from wallet.store import notes as note_store
from wallet.store import people

pytestmark = pytest.mark.slow

SIZE = 131_072
DEAD_NOTES = int(os.environ.get("WALLET_TEST_DEAD_NOTES", "100000"))  # ~15 s SQLite, ~45 s PG
CHUNK = 128  # bulk notes placed per call of the allocator in the large test


class _Issuer:
    """acme's allocator, driven in one session: notes placed where an export puts them."""

    def __init__(self, app: Flask, rng: random.Random) -> None:
        self.app, self.rng = app, rng
        self.person_id = fs.person_id(app, fs.ADA)
        self.taken: dict[int, set[int]] = {}

    def place(self, count: int, *, chunk: int) -> None:
        """Place `count` dead notes, `chunk` per call of the allocator, then commit."""
        with self.app.app_context():
            s = db.session()
            org = people.org_by_slug(s, slug="acme")
            assert org is not None and org.id is not None
            key = key_store.active_key(s, org_id=org.id)
            assert key is not None
            now = note_actions.utcnow()
            while count > 0:
                number = note_actions._list_with_room(s, org=org, size=SIZE, now=now)
                taken = self._taken(s, org.id, number)
                placed = []
                for _ in range(min(chunk, count)):
                    idx = self.rng.randrange(SIZE)
                    while idx in taken:
                        idx = self.rng.randrange(SIZE)
                    taken.add(idx)
                    placed.append((idx, self.rng.choice(ss.DEAD_STATES)))
                ss.insert_rows(s, ss.dead_note_rows(org_id=org.id, person_id=self.person_id,
                                                    kid=key.kid, number=number,
                                                    placed=placed))
                count -= len(placed)
            s.commit()

    def _taken(self, s: Any, org_id: int, number: int) -> set[int]:
        if number not in self.taken:  # real exports may have placed notes there too
            self.taken[number] = set(s.execute(sa.select(Note.status_idx).where(
                Note.org_id == org_id, Note.status_list == number)).scalars())
        return self.taken[number]

    def exported(self, note: fs.Exported) -> None:
        self.taken.setdefault(note.status_list, set()).add(note.status_idx)


def _records(app: Flask) -> list[tuple[str, int, int, str]]:
    """(jti, list, index, state) of every note acme issued."""
    org_id = fs.org_id(app, "acme")
    with app.app_context():
        s = db.session()
        rows = s.execute(sa.select(Note.jti, Note.status_list, Note.status_idx, Note.state)
                         .where(Note.org_id == org_id)).all()
        s.rollback()
    return [(r[0], int(r[1]), int(r[2]), r[3]) for r in rows]


class _Recording:
    """The in-process transport, recording the status list tokens it carried."""

    def __init__(self, app: Flask) -> None:
        self.lists: list[tuple[str, int]] = []
        fs.FaultTransport(self._fault).install(app)

    def _fault(self, _method: str, url: str, forward: Any) -> Any:
        answer = forward()
        if "/status/" in url:
            self.lists.append((url, len(answer.body)))
        return answer


def _every_status_through_the_verifier(app: Flask, records: list[tuple[str, int, int, str]],
                                       rng: random.Random, *, sample: int) -> list[str]:
    """globex reads acme's lists (each once) and finds every note's status; check_status
    on a sample of the dead ones. Returns the list URIs fetched."""
    from wallet.actions.lookups import Lookups

    fs.clear_caches(app)
    recording = _Recording(app)
    with app.app_context():
        s = db.session()
        globex = people.org_by_slug(s, slug="globex")
        assert globex is not None
        lookups = Lookups(s, globex)
        lookups.fetch_lists({f"{fs.ACME}/status/{r[1]}": fs.ACME for r in records})
        for _jti, number, idx, state in records:
            listed = lookups.listed(f"{fs.ACME}/status/{number}")
            assert listed.status(idx) == note_store.STATUS_OF_STATE[state], (number, idx, state)
        holder = jose.PublicKey.from_jwk(ss.HOLDER_JWK)
        dead = [r for r in records if r[3] != "active"]
        for jti, number, idx, state in rng.sample(dead, min(sample, len(dead))):
            note = notes.Note(jwt="", issuer=fs.ACME, jti=jti, iat=0, nbf=0, exp=0,
                              holder=holder, status_uri=f"{fs.ACME}/status/{number}",
                              status_idx=idx, kid="", amount=None)  # type: ignore[arg-type]
            expected = AlreadyRedeemed if state == "redeemed" else Revoked
            with pytest.raises(expected):
                lookups.check_status(note)
        s.rollback()
    fetched = [url for url, _n in recording.lists]
    assert len(fetched) == len(set(fetched))  # each list fetched once
    assert sorted(fetched) == sorted({f"{fs.ACME}/status/{r[1]}" for r in records})
    # Small enough for every verifier, also those applying the general 16 KiB limit.
    assert max(n for _u, n in recording.lists) <= jose.MAX_TOKEN_BYTES * 3 // 4
    app.extensions.pop("wallet.transport")
    return fetched


def _verify(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/api/v1/orgs/globex/verify", json=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    return answer.get_json()  # type: ignore[no-any-return]


def test_many_tiny_notes_never_make_a_list_token_over_what_verifiers_accept(
        app: Flask, client: FlaskClient) -> None:
    """An engineer exports thousands of 0.01 notes and each is then revoked or redeemed:
    every list stays under 16 KiB (before the bound: one list of about 17 KB, refused
    by every verifier)."""
    seed = int(os.environ.get("WALLET_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (WALLET_TEST_SEED replays it)")
    rng = random.Random(seed)
    fed = fs.setup_federation(app)
    issuer = _Issuer(app, rng)
    headers = {"Authorization": f"Bearer {fed.token('acme')}"}
    real = []
    for round_ in range(10):
        issuer.place(900, chunk=1)  # one at a time: exactly what 900 exports do
        for i in range(2):
            answer = client.post("/api/v1/orgs/acme/me/notes",
                                 json={"amount": "0.01", "holder_jwk": jose.public_jwk(fed.holder)},
                                 headers={**headers, "Idempotency-Key": f"tiny-{round_}-{i}"})
            assert answer.status_code == 201, answer.get_data(as_text=True)[:300]
            made = answer.get_json()
            uri, idx = made["status"]["status_list"]["uri"], made["status"]["status_list"]["idx"]
            note = fs.Exported(made["note"], made["jti"], 10_000, idx, int(uri.rsplit("/", 1)[1]))
            issuer.exported(note)
            real.append(note)
    for note in real:  # every note dead: the worst case of each list
        with app.app_context():
            note_actions.revoke(db.session(), slug="acme", jti=note.jti, reason="tiny",
                                actor=Actor.cli())
    records = _records(app)
    per_list: dict[int, int] = defaultdict(int)
    for _jti, number, _idx, _state in records:
        per_list[number] += 1
    assert len(records) == 9020
    _every_status_through_the_verifier(app, records, rng, sample=200)
    assert len(per_list) == 3 and max(per_list.values()) <= status.DEFAULT_MAX_NOTES
    for note in real[:5]:
        report = _verify(client, {"note": note.token})
        assert [e["code"] for e in report["errors"]] == ["revoked"], report


def test_an_issuer_with_100000_dead_notes_still_verifies_every_note(
        app: Flask, client: FlaskClient) -> None:
    """100,000 revoked and redeemed notes, written in bulk where the allocator puts them
    (128 per call, so a list may even take up to 127 past the bound), 50 real exports in
    between (some revoked, one honoured): globex fetches each list once, finds every
    note's status, and fully verifies the real notes and presentations of them."""
    dead_notes = DEAD_NOTES
    seed = int(os.environ.get("WALLET_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (WALLET_TEST_SEED replays it), {dead_notes} dead notes")
    rng = random.Random(seed)
    started = time.monotonic()
    fed = fs.setup_federation(app, ada_credit="1000.00")
    issuer = _Issuer(app, rng)
    real: list[fs.Exported] = []
    rounds = 50
    for round_ in range(rounds):
        issuer.place(dead_notes // rounds + (dead_notes % rounds if round_ == 0 else 0),
                     chunk=CHUNK)
        note = fs.export(app, fed.holder, "1.00")
        issuer.exported(note)
        real.append(note)
    built = time.monotonic()
    revoked, honoured = real[::3], real[1]
    for note in revoked:
        with app.app_context():
            note_actions.revoke(db.session(), slug="acme", jti=note.jti, reason="scale",
                                actor=Actor.cli())
    answer = fs.bring(fed, client, honoured)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]

    records = _records(app)
    assert len(records) == dead_notes + rounds
    fetched = _every_status_through_the_verifier(app, records, rng, sample=1000)
    assert len(fetched) >= dead_notes // (status.DEFAULT_MAX_NOTES + CHUNK)
    for note in real:  # full verification of the real notes, at another organisation
        report = _verify(client, {"note": note.token})
        if note in revoked:
            assert [e["code"] for e in report["errors"]] == ["revoked"], report
        elif note is honoured:
            assert [e["code"] for e in report["errors"]] == ["already_redeemed"], report
        else:
            assert report["valid"] is True, report
    active = [n for n in real if n not in revoked and n is not honoured]
    for note in rng.sample(active, 5):
        presentation = fs.present(note.token, fed.holder, "globex", fs.nonce(client, "globex"))
        report = _verify(client, {"presentations": [presentation]})
        assert report["valid"] is True, report
    print(f"built in {built - started:.1f} s, checked in {time.monotonic() - built:.1f} s,"
          f" {len(fetched)} lists")
