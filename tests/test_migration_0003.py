"""Migration 0003 keeps existing people working (both databases): memberships of people
with a password become confirmed, a pending invitation becomes an invitation of the
person's first membership (its link keeps working), and the old columns go."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests import support
from wallet import migrations, security
from wallet.db import make_engine


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    base = make_url(support.normalise(os.environ["WALLET_TEST_POSTGRES_URL"]))
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"wallet_m_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _insert(c: sa.Connection, table: str, **values: Any) -> int:
    """Insert into a table of the old schema (reflected: the models describe the new one)."""
    reflected = sa.Table(table, sa.MetaData(), autoload_with=c)
    return int(c.execute(sa.insert(reflected).values(**values)
                         .returning(reflected.c.id)).scalar_one())


def test_upgrade_confirms_members_with_passwords_and_keeps_pending_links(
        empty_url: str, tmp_path: Path) -> None:
    engine = make_engine(empty_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    token = "old-invitation-token-abcdef"
    try:
        migrations.upgrade(engine, "0002")
        with engine.begin() as c:
            orgs = [_insert(c, "organization", slug=slug, name=slug, currency="USD",
                            alumni_days=90, note_ttl_days=365, created_at=now,
                            config_version=0) for slug in ("acme", "globex")]
            ada = _insert(c, "person", email="ada@x.test", name="Ada", created_at=now,
                          password_hash="$argon2id$placeholder")
            new = _insert(c, "person", email="new@x.test", name="", created_at=now,
                          invite_hash=security.hash_token(token),
                          invite_expires_at=now + timedelta(days=3))
            for org in orgs:
                _insert(c, "membership", org_id=org, person_id=ada, role="engineer",
                        started_on=now.date(), created_at=now)
            first = _insert(c, "membership", org_id=orgs[1], person_id=new, role="engineer",
                            started_on=now.date(), created_at=now)
            _insert(c, "membership", org_id=orgs[0], person_id=new, role="engineer",
                    started_on=now.date(), created_at=now)
        migrations.upgrade(engine)
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT id, person_id, confirmed_at FROM membership"
                                     " ORDER BY id")).all()
            assert [(p, at is not None) for _id, p, at in rows] == [
                (ada, True), (ada, True), (new, False), (new, False)]
            names = c.execute(sa.text("SELECT name FROM membership ORDER BY id")).scalars()
            assert list(names) == ["Ada", "Ada", "", ""]
            invitations = c.execute(sa.text(
                "SELECT membership_id, purpose, token_hash, used_at FROM invitation")).all()
            assert invitations == [(first, "join", security.hash_token(token), None)]
            columns = {col["name"] for col in sa.inspect(c).get_columns("person")}
            assert "invite_hash" not in columns and "invite_expires_at" not in columns
    finally:
        engine.dispose()
    # The old link still works and confirms that one membership.
    from wallet import create_app

    app = create_app(support.test_config(empty_url, tmp_path))
    try:
        client = app.test_client()
        r = support.post_form(client, f"/invite/{token}",
                              {"password": "a long password", "confirm": "a long password"})
        assert r.status_code == 302
        assert client.get("/orgs/globex/wallet").status_code == 200
        assert client.get("/orgs/acme/wallet").status_code == 404
    finally:
        app.extensions["wallet.engine"].dispose()


def test_downgrade_and_upgrade_again(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        migrations.upgrade(engine)
        from alembic import command

        command.downgrade(migrations.config(engine), "0002")
        assert migrations.current_revision(engine) == "0002"
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision(engine)
    finally:
        engine.dispose()
