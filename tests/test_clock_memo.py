"""The shell's one clock and its per-app memo (wallet/clock.py, wallet/memo.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
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


def _at_once(count: int, call: Callable[[], object]) -> list[object]:
    """`call()` from `count` threads released together; what each returned or raised."""
    start, out, lock = threading.Barrier(count), [], threading.Lock()

    def one() -> None:
        start.wait()
        try:
            value = call()
        except Exception as err:
            value = err
        with lock:
            out.append(value)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_share_runs_one_make_per_key_and_every_waiting_caller_gets_its_value() -> None:
    app = _app()
    fake = clock.install(app, clock.FakeClock())
    box: Memo[str] = Memo()
    made: list[int] = []
    gate = threading.Event()

    def make() -> str:
        made.append(1)
        gate.wait(5)  # the others arrive while this one is under way
        return box.put("list", f"fetch {len(made)}", ttl=60)

    def call() -> object:
        with app.app_context():
            return box.share("list", make)

    threading.Timer(0.3, gate.set).start()
    assert _at_once(8, call) == ["fetch 1"] * 8
    with app.app_context():
        assert box.share("list", make) == "fetch 1"  # kept: no make at all
        fake.advance(61)
        assert box.share("list", make) == "fetch 2"  # expired: made again, once
    assert len(made) == 2


def test_share_hands_a_failure_to_the_waiting_callers_and_keeps_nothing() -> None:
    app = _app()
    clock.install(app, clock.FakeClock())
    box: Memo[str] = Memo()
    made: list[int] = []

    def make() -> str:
        made.append(1)
        threading.Event().wait(0.3)
        raise LookupError("the source is down")

    def call() -> object:
        with app.app_context():
            return box.share("list", make)

    answers = _at_once(4, call)
    assert len(made) == 1 and all(isinstance(a, LookupError) for a in answers)
    with app.app_context():
        assert box.get("list") is None
        assert box.share("list", lambda: "back") == "back"  # the next caller makes again


def test_a_caller_waits_for_a_shared_make_at_most_wait_then_makes_its_own() -> None:
    # A slow source must not hold every waiting thread until it answers: past `wait`, a
    # caller goes to the source itself (where its own limits apply).
    app = _app()
    clock.install(app, clock.FakeClock())
    box: Memo[str] = Memo()
    gate, made = threading.Event(), []
    lock = threading.Lock()

    def make() -> str:
        with lock:
            made.append(1)
            first = len(made) == 1
        if first:
            gate.wait(5)  # the shared one is slow; the others give up waiting for it
            return "shared"
        return "own"

    def call() -> object:
        with app.app_context():
            return box.share("list", make, wait=0.2)

    threading.Timer(1.0, gate.set).start()
    answers = _at_once(4, call)
    assert sorted(answers) == ["own", "own", "own", "shared"]  # type: ignore[type-var]
    assert len(made) == 4
