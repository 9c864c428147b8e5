"""Status lists never outgrow what verifiers accept (issue #11, hole 4).

An issuer bounds the notes it ever places in one list (`WALLET_STATUS_LIST_MAX_NOTES`; a
small bound here so the tests stay fast): every placed entry may turn non-zero, so the
bound caps the compressed list. Lists older or larger than the bound just stop taking
notes. A verifier accepts status list tokens up to their own limit (256 KiB), so a list
from an older or other issuer slightly over 16 KiB still verifies.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import notes_support as ns
from tests import status_support as ss
from tests import support
from wallet import db
from wallet.actions import notes as note_actions
from wallet.actions._base import Actor
from wallet.core import jose, status
from wallet.core.errors import IssuerUnavailable
from wallet.models import Note, StatusList
from wallet.store import notes as note_store
from wallet.store import people

BOUND = 8
SIZE = 131_072


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    return support.test_config(db_url, tmp_path, WALLET_STATUS_LIST_MAX_NOTES=BOUND)


@pytest.fixture
def fed(app: Flask) -> fs.Fed:
    return fs.setup_federation(app)


def _acme(app: Flask) -> tuple[int, int, str]:
    """acme's id, ada's id and acme's active kid."""
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        from wallet.store import keys as key_store

        key = key_store.active_key(s, org_id=org.id)
        assert key is not None
        s.rollback()  # SQLite: every transaction holds the write lock
        found = org.id, key.kid
    return found[0], fs.person_id(app, fs.ADA), found[1]


def _legacy_list(app: Flask, number: int, count: int, *, size: int = SIZE) -> None:
    """List `number` as an older issuer left it: `count` dead notes at random indexes."""
    org_id, person_id, kid = _acme(app)
    placed = [(idx, random.choice(ss.DEAD_STATES)) for idx in random.sample(range(size), count)]
    with app.app_context():
        s = db.session()
        note_store.open_list(s, org_id=org_id, number=number, size=size,
                             now=note_actions.utcnow())
        ss.insert_rows(s, ss.dead_note_rows(org_id=org_id, person_id=person_id, kid=kid,
                                            number=number, placed=placed))
        s.commit()


def test_each_list_takes_at_most_the_bound_then_a_new_list_opens(
        app: Flask, client: FlaskClient, fed: fs.Fed) -> None:
    made = [fs.export(app, fed.holder, "1.00") for _ in range(2 * BOUND + 3)]
    org_id = fs.org_id(app, "acme")
    assert ss.counts_per_list(app, org_id) == {1: BOUND, 2: BOUND, 3: 3}
    assert [n.status_list for n in made] == sorted(n.status_list for n in made)
    for note in made:  # each note names its own list, and verifies at another organisation
        _h, claims, _s = ns.parts(note.token)
        assert claims["status"]["status_list"] == {
            "idx": note.status_idx, "uri": f"{fs.ACME}/status/{note.status_list}"}
        assert 0 <= note.status_idx < SIZE
    for note in random.sample(made, 5):
        report = client.post("/api/v1/orgs/globex/verify", json={"note": note.token}).get_json()
        assert report["valid"] is True, report
    with app.app_context():
        sizes = db.session().execute(sa.select(StatusList.number, StatusList.size)
                                     .where(StatusList.org_id == org_id)).all()
    assert sorted(sizes) == [(1, SIZE), (2, SIZE), (3, SIZE)]


def test_a_list_already_over_the_bound_takes_no_more_notes(
        app: Flask, client: FlaskClient, fed: fs.Fed) -> None:
    _legacy_list(app, 1, 3 * BOUND)
    note = fs.export(app, fed.holder, "1.00")
    assert note.status_list == 2
    org_id = fs.org_id(app, "acme")
    assert ss.counts_per_list(app, org_id) == {1: 3 * BOUND, 2: 1}
    # The old list is still served, with every one of its entries.
    with app.app_context():
        expected = dict(note_store.non_valid_entries(db.session(), org_id=org_id, number=1))
    _h, payload, _s = ns.parts(ss.list_token(client, 1) + "~")
    data = status.decompress(payload["status_list"]["lst"], max_bytes=1 << 20)
    assert {i: v for i, v in enumerate(status.unpack(data)) if v} == expected
    report = client.post("/api/v1/orgs/globex/verify", json={"note": note.token}).get_json()
    assert report["valid"] is True, report


def test_a_list_of_another_size_takes_no_more_notes(app: Flask, fed: fs.Fed) -> None:
    """WALLET_STATUS_LIST_SIZE changed: indexes drawn for the new size would not fit the
    old list (or would leave part of it unused), so the next note opens a new list."""
    _legacy_list(app, 1, 1, size=2 * SIZE)
    note = fs.export(app, fed.holder, "1.00")
    assert note.status_list == 2 and note.status_idx < SIZE


@pytest.mark.parametrize("threads", [16])
def test_concurrent_exports_never_overfill_a_list_or_share_an_index(
        app: Flask, fed: fs.Fed, threads: int) -> None:
    """16 exports race for the last free place of list 1: one gets it, the others open
    and share list 2; no two notes ever get the same (list, index)."""
    for _ in range(BOUND - 1):
        fs.export(app, fed.holder, "1.00")
    org_id = fs.org_id(app, "acme")
    assert ss.counts_per_list(app, org_id) == {1: BOUND - 1}
    jwk = jose.public_jwk(fed.holder)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    placed: list[tuple[int, int]] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=30)
                row = note_actions.export(db.session(), slug="acme", email=fs.ADA,
                                          amount="1.00", holder_jwk=jwk, actor=Actor.cli())
                with lock:
                    placed.append((row.status_list, row.status_idx))
        except BaseException as err:  # reported below
            with lock:
                errors.append(err)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == [] and len(placed) == threads
    assert len(set(placed)) == threads
    assert ss.counts_per_list(app, org_id) == {1: BOUND, 2: BOUND, 3: threads - BOUND - 1}
    assert fs.account_balance(app, "acme", "notes_outstanding") == \
        (BOUND - 1 + threads) * fs.MICROS


def test_a_verifier_accepts_a_status_list_token_over_16_kib(
        app: Flask, client: FlaskClient, fed: fs.Fed) -> None:
    """An older issuer's list with 10,000 dead entries is about 20 KB: verifiers refused
    every note in it (`issuer_unavailable`) while only 16 KiB were allowed."""
    _legacy_list(app, 1, 10_000)
    token = ss.list_token(client, 1)
    assert jose.MAX_TOKEN_BYTES < len(token) < status.MAX_TOKEN_BYTES
    with app.app_context():
        s = db.session()
        org_id = fs.org_id(app, "acme")
        entries = dict(note_store.non_valid_entries(s, org_id=org_id, number=1))
        globex = people.org_by_slug(s, slug="globex")
        assert globex is not None
        from wallet.actions.lookups import Lookups

        lookups, uri = Lookups(s, globex), f"{fs.ACME}/status/1"
        lookups.fetch_lists({uri: fs.ACME})
        listed = lookups.listed(uri)
        assert {i: listed.status(i) for i in entries} == entries
        assert sum(1 for v in status.unpack(listed.data) if v) == len(entries)


def test_a_status_list_token_over_its_own_limit_is_refused(
        app: Flask, client: FlaskClient, fed: fs.Fed) -> None:
    """Still bounded: a list token over 256 KiB, even well signed, is `issuer_unavailable`."""
    kid = _acme(app)[2]
    key = ns.private_key(app, kid)
    uri = f"{fs.ACME}/status/1"
    noisy = random.Random(7).randbytes(200_000)  # incompressible: about 350 KB as a token
    big = jose.sign({"alg": "EdDSA", "typ": status.TYP, "kid": kid},
                    status.claims(uri=uri, packed=noisy, iat=int(note_actions.utcnow()
                                                                 .timestamp()),
                                  ttl=60, exp=int(note_actions.utcnow().timestamp()) + 3600),
                    key)
    assert len(big) > status.MAX_TOKEN_BYTES

    def serve_big(_method: str, url: str, forward: Any) -> Any:
        from wallet.peers import Fetched

        return Fetched(200, big.encode(), "application/statuslist+jwt") if url == uri \
            else forward()

    fs.FaultTransport(serve_big).install(app)
    with app.app_context():
        s = db.session()
        globex = people.org_by_slug(s, slug="globex")
        assert globex is not None
        from wallet.actions.lookups import Lookups

        lookups = Lookups(s, globex)
        lookups.fetch_lists({uri: fs.ACME})
        with pytest.raises(IssuerUnavailable, match="limited to"):
            lookups.listed(uri)


def test_the_bound_is_a_checked_setting(db_url: str, tmp_path: Path) -> None:
    """A bound (or list size) that could outgrow what verifiers accept, or a list small
    enough to tell holders apart, refuses to start."""
    from wallet import create_app
    from wallet.config import ConfigError

    for overrides in ({"WALLET_STATUS_LIST_MAX_NOTES": 20_000},
                      {"WALLET_STATUS_LIST_MAX_NOTES": 0},
                      {"WALLET_STATUS_LIST_SIZE": 1 << 20},  # 4096 notes in 1M entries: 15 KB
                      {"WALLET_STATUS_LIST_SIZE": 65_536}):
        with pytest.raises(ConfigError, match="WALLET_STATUS_LIST"):
            create_app(support.test_config(db_url, tmp_path, **overrides))
    fine = create_app(support.test_config(db_url, tmp_path, WALLET_STATUS_LIST_SIZE=1 << 20,
                                          WALLET_STATUS_LIST_MAX_NOTES=2000))
    fine.extensions["wallet.engine"].dispose()


def test_notes_at_random_indexes_of_a_bounded_list_reveal_no_order(
        app: Flask, fed: fs.Fed) -> None:
    """Privacy holds with the bound: indexes are still drawn over all 131,072 entries."""
    made = [fs.export(app, fed.holder, "1.00") for _ in range(3 * BOUND)]
    with app.app_context():
        rows = db.session().execute(sa.select(Note.status_list, Note.status_idx)).all()
    assert len(rows) == len(made)
    spread = max(i for _n, i in rows) - min(i for _n, i in rows)
    assert spread > SIZE // 2
