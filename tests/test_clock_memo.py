"""The shell's one clock and its per-app memo (wallet/clock.py, wallet/memo.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from wallet import clock
from wallet.actions import _base
from wallet.memo import Memo, memo


def _app() -> Flask:
    return Flask("clock-test")


def test_a_fake_clock_installed_on_an_app_is_what_the_shell_reads() -> None:
    app = _app()
    start = datetime(2027, 1, 31, 23, 59, 30, tzinfo=UTC)
    fake = clock.install(app, clock.FakeClock(start))
    with app.app_context():
        assert clock.now() == start == _base.utcnow()
        assert clock.today().isoformat() == "2027-01-31" == _base.today().isoformat()
        before = clock.monotonic()
        fake.advance(45)
        assert clock.today().isoformat() == "2027-02-01"
        assert clock.unix() == int(start.timestamp()) + 45
        assert clock.monotonic() - before == pytest.approx(45)
        fake.set(datetime(2027, 3, 1, tzinfo=UTC))
        assert clock.now() == datetime(2027, 3, 1, tzinfo=UTC)
    with _app().app_context():  # another app, and no app at all: the real clock
        assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5


def test_a_fake_clock_refuses_naive_times_and_going_back() -> None:
    with pytest.raises(ValueError):
        clock.FakeClock(datetime(2027, 1, 1))
    fake = clock.FakeClock(datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        fake.advance(-1)
    with pytest.raises(ValueError):
        fake.set(datetime(2026, 1, 1, tzinfo=UTC))


def test_a_memo_forgets_an_entry_when_its_ttl_passes_on_the_apps_clock() -> None:
    app = _app()
    fake = clock.install(app, clock.FakeClock())
    with app.app_context():
        lists: Memo[str] = memo("status-lists", ttl=60)
        lists.put("a", "kept")
        lists.put("b", "short", ttl=5)
        fake.advance(4.9)
        assert lists.get("a") == "kept" and lists.get("b") == "short"
        fake.advance(0.2)
        assert lists.get("b") is None and lists.get("a") == "kept"
        fake.advance(timedelta(minutes=1).total_seconds())
        assert lists.get("a", "gone") == "gone"
        assert memo("status-lists") is lists  # the same memo for the same app
    with _app().app_context():
        assert memo("status-lists").get("a") is None  # each app starts empty


def test_get_or_set_makes_once_while_kept_and_the_size_bound_holds() -> None:
    made: list[int] = []
    box: Memo[int] = Memo(maxsize=3)

    def make() -> int:
        made.append(1)
        return len(made)

    assert box.get_or_set("k", make) == 1 and box.get_or_set("k", make) == 1
    assert made == [1]
    for key in range(10):
        box.put(key, key)
    assert len(box) <= 3
    box.pop(9)
    assert box.get(9) is None
    box.clear()
    assert len(box) == 0


def test_a_memo_is_safe_to_share_between_threads() -> None:
    box: Memo[int] = Memo(maxsize=100_000)

    def fill(base: int) -> None:
        for i in range(2_000):
            box.put((base, i), i)
            assert box.get((base, i)) == i

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(box) == 16_000
