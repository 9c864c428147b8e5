"""Per-process state, kept per app: one small, thread-safe memo with an optional lifetime.

Anything a process remembers between requests (an organisation's id, its keys as of a
config version, a status list until its `ttl`, a signed status-list token) lives in a
`Memo` named after what it holds, inside `app.extensions`: each app (and so each test)
starts empty, nothing is a module global, and no test needs to reach into a private
cache. Lifetimes run on `wallet.clock.monotonic()`, so a faked clock expires them too.

    ids = memo("org-ids")                       # no lifetime: facts that never change
    lists = memo("status-lists", maxsize=1024)  # per-entry ttl given to put()
    org_id = ids.get_or_set(slug, lambda: read_the_id(slug))
    listed = lists.share(uri, fetch_and_put)    # one fetch at a time per key, shared
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from flask import current_app

from wallet import clock

V = TypeVar("V")
T = TypeVar("T")
EXTENSION = "wallet.memo"
_MISSING: Any = object()


class Memo(Generic[V]):
    """A map from hashable keys to values, each optionally expiring after its ttl."""

    def __init__(self, *, ttl: float | None = None, maxsize: int = 4096) -> None:
        self.ttl, self.maxsize = ttl, maxsize
        self._lock = threading.Lock()
        self._items: dict[Hashable, tuple[float | None, V]] = {}
        self._making: dict[Hashable, _Making] = {}

    def get(self, key: Hashable, default: Any = None) -> V | Any:
        """The value kept for `key`, or `default` when there is none or it expired."""
        with self._lock:
            return self._live(key, default)

    def _live(self, key: Hashable, default: Any) -> V | Any:
        """`get` with the lock held."""
        found = self._items.get(key, _MISSING)
        if found is _MISSING:
            return default
        expires, value = found
        if expires is not None and clock.monotonic() >= expires:
            del self._items[key]
            return default
        return value

    def put(self, key: Hashable, value: V, *, ttl: float | None = None) -> V:
        """Keep `value` for `key` (for `ttl` seconds, else the memo's own ttl); return it."""
        lifetime = ttl if ttl is not None else self.ttl
        expires = None if lifetime is None else clock.monotonic() + lifetime
        with self._lock:
            if key not in self._items and len(self._items) >= self.maxsize:
                self._items.clear()  # a crude bound: refilling is cheap, growing is not
            self._items[key] = (expires, value)
        return value

    def get_or_set(self, key: Hashable, make: Callable[[], V], *,
                   ttl: float | None = None) -> V:
        """The kept value, or `make()` kept and returned (two racing makers: last wins)."""
        found = self.get(key, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        return self.put(key, make(), ttl=ttl)

    def share(self, key: Hashable, make: Callable[[], T], *,
              wait: float | None = None) -> V | T:
        """The value kept for `key`, else what `make()` returns, with one `make` per key
        running at a time: callers that come while it runs wait for it and get what it
        returned (or raised). `make` keeps what should be kept (`put`, with its ttl).
        With `wait`, a caller waits only until the shared `make` has run `wait` seconds
        (real time); when it has not finished by then, or had run longer already, the
        caller runs `make()` itself: a slow source does not hold every waiting thread.

        Many requests of one process that miss the same entry at once (a status list
        that has just expired) then cost its source one fetch, not one per thread.
        """
        with self._lock:
            found = self._live(key, _MISSING)
            if found is not _MISSING:
                return found
            making = self._making.get(key)
            leader = making is None
            if making is None:
                making = self._making[key] = _Making()
        if not leader:
            if not self._waited(making, wait):
                return make()
            if making.error is not None:
                raise making.error
            return making.result  # type: ignore[no-any-return]
        try:
            making.result = make()
            return making.result  # type: ignore[no-any-return]
        except BaseException as err:
            making.error = err
            raise
        finally:
            with self._lock:
                del self._making[key]
            making.done.set()

    @staticmethod
    def _waited(making: _Making, wait: float | None) -> bool:
        """Wait for `making` until it has run `wait` seconds; whether it finished."""
        if wait is None:
            return making.done.wait()
        left = making.started + wait - time.monotonic()
        return making.done.is_set() or (left > 0 and making.done.wait(left))

    def pop(self, key: Hashable) -> None:
        """Forget `key`."""
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class _Making:
    """One `make` under way in `Memo.share`, and what it came to."""

    __slots__ = ("done", "error", "result", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_CREATE = threading.Lock()


def memo(name: str, *, ttl: float | None = None, maxsize: int = 4096) -> Memo[Any]:
    """The current app's memo called `name` (made on first use with these settings)."""
    memos: dict[str, Memo[Any]] | None = current_app.extensions.get(EXTENSION)
    if memos is None:
        with _CREATE:
            memos = current_app.extensions.setdefault(EXTENSION, {})
    found = memos.get(name)
    if found is None:
        with _CREATE:
            found = memos.setdefault(name, Memo(ttl=ttl, maxsize=maxsize))
    return found
