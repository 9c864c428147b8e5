"""Outbound HTTP(S) to peers on urllib3: a total deadline, a size cap, no redirects.

urllib3 pools and keeps connections alive; its timeouts are per socket operation, so a
peer that sends one byte a second would never time out. Every request here has a total
deadline (connect, TLS, the request, the head and every read of the body): the socket's
timeout shrinks to the time left before each read, and a watchdog shuts the socket down
when the deadline passes, whatever the request is blocked on. Each origin has a
concurrency cap and a circuit breaker (`wallet.peers.guard`).
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import logging
import socket
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import SplitResult

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from wallet.core.errors import IssuerUnavailable, MalformedToken
from wallet.peers.addresses import Policy, Resolver, check_addresses, check_url, default_port
from wallet.peers.base import Fetched, origin, shown
from wallet.peers.guard import Guard, Limits

log = logging.getLogger("wallet.federation")

_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException,
                   ValueError)


class _Watch:
    """One request's deadline, and the connection and socket it is using."""

    __slots__ = ("conn", "deadline", "done", "fired", "idle_limit", "reused", "sock")

    def __init__(self, deadline: float, idle_limit: float) -> None:
        self.deadline, self.idle_limit = deadline, idle_limit
        self.conn: Any = None
        self.sock: Any = None
        self.reused = self.fired = self.done = False


_current = threading.local()  # the watch of the request this thread is making


class _Watchdog:
    """Shuts down the socket of every request still running at its deadline.

    One thread per transport, started on first use and gone after a minute with nothing
    to watch. Shutting a socket down wakes whatever call is blocked on it (connect, TLS
    handshake, a read of the head or the body); the request then fails at once.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self, deadline: float, idle_limit: float) -> _Watch:
        watch = _Watch(deadline, idle_limit)
        with self._changed:
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="peer-deadlines",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._changed.notify()
        return watch

    def finish(self, watch: _Watch) -> None:
        with self._changed:  # so that a watch is never fired after it finished
            watch.done = True

    def _run(self) -> None:
        with self._changed:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    if not self._changed.wait(60) and not self._heap:
                        self._thread = None
                        return
                    continue
                left = self._heap[0][0] - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                _at, _n, watch = heapq.heappop(self._heap)
                watch.fired = True
                _shut(watch.sock if watch.sock is not None else
                      getattr(watch.conn, "sock", None))


def _shut(sock: Any) -> None:
    raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
    if isinstance(raw, socket.socket):
        # The plain socket's shutdown: also right under TLS; a closed socket is fine.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(raw, socket.SHUT_RDWR)


class _Watched:
    """Tells the current request's watch which connection and socket it uses, and opens a
    new connection instead of reusing one idle for too long (the peer may be closing it)."""

    sock: Any
    _sent_at: float | None = None  # when the last request went out on this socket

    def connect(self) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.conn = self
        self._sent_at = None
        super().connect()  # type: ignore[misc]
        if watch is not None:
            watch.sock = self.sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch = getattr(_current, "watch", None)
        reused = self.sock is not None and self._sent_at is not None
        if reused and watch is not None and \
                time.monotonic() - (self._sent_at or 0.0) > watch.idle_limit:
            self.close()  # type: ignore[attr-defined]
            reused = False
        if watch is not None:
            watch.conn, watch.sock, watch.reused = self, self.sock, reused
        # urllib3 sends the head and a bytes body in two writes; one is enough (half the
        # system calls and packets on the hot path of every redeem).
        self._held: bytes | None = b"" if isinstance(kwargs.get("body"), bytes) else None
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        finally:
            held, self._held = self._held, None
            if held:
                super().send(held)  # type: ignore[misc]
        self._sent_at = time.monotonic()
        if watch is not None:
            watch.sock = self.sock  # connected just now, if it was not

    def send(self, data: Any) -> None:
        held = getattr(self, "_held", None)
        if held is None:
            super().send(data)  # type: ignore[misc]
        elif not held:
            self._held = bytes(data)  # the head: wait for the body
        else:
            self._held = None
            super().send(held + bytes(data))  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Closed(Exception):
    """A reused connection was closed by the peer before it answered: safe to resend."""


class HttpTransport:
    """HTTP(S) to peers: pooled kept-alive connections, a total deadline per request, a
    size cap, no redirects, a concurrency cap and a circuit breaker per origin.

    A request on a reused connection that the peer closed meanwhile is sent once more on
    a new one: both the requests sent here are safe to repeat (GETs, and redeem, which
    answers a verifier's retry with the receipt it already issued). Nothing else is
    retried. With an egress proxy in the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
    `NO_PROXY`) requests go through it, and it resolves the names.
    """

    IDLE_SECONDS = 1.0  # reuse a connection only if it idled less (peers close idle ones)
    MAX_IDLE_PER_PEER = 32
    CHUNK = 65536

    def __init__(self, *, timeout: float, max_bytes: int, limits: Limits | None = None,
                 policy: Policy | None = None, resolver: Resolver | None = None) -> None:
        self.timeout, self.max_bytes = float(timeout), int(max_bytes)
        self.policy = policy or Policy(allow_http=True, allow_private=True)
        self.resolver = resolver or Resolver()
        self.guard = Guard(limits or Limits())
        self._watchdog = _Watchdog()
        self._direct = self._manager(urllib3.PoolManager)
        self._proxies = urllib.request.getproxies()
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()

    def _manager(self, kind: Any, *args: Any) -> Any:
        manager = kind(*args, num_pools=64, maxsize=self.MAX_IDLE_PER_PEER, block=False)
        manager.pool_classes_by_scheme = _POOLS
        return manager

    def request(self, method: str, url: str, *, body: bytes | None = None,
                content_type: str | None = None,
                headers: dict[str, str] | None = None) -> Fetched:
        """Send one request within the deadline; a 3xx comes back as it is (no redirects).
        `headers` are sent besides the transport's own (a webhook's signature)."""
        parts = check_url(url, self.policy)
        peer = origin(url)
        deadline = time.monotonic() + self.timeout
        slot = self.guard.enter(peer)
        failed = True
        try:
            answer = self._exchange(method, url, parts, body, content_type, deadline,
                                    headers)
            failed = answer.status >= 500 or answer.status == 429
            return answer
        except MalformedToken:
            failed = False  # refused here, before anything was sent: not the peer's fault
            raise
        finally:
            self.guard.leave(slot, ok=not failed)

    def close(self) -> None:
        """Close the idle connections (the process is done with this transport)."""
        self._direct.clear()
        with self._lock:
            for manager in self._proxied.values():
                manager.clear()

    # -- one exchange ---------------------------------------------------------------------

    def _exchange(self, method: str, url: str, parts: SplitResult, body: bytes | None,
                  content_type: str | None, deadline: float,
                  extra: dict[str, str] | None = None) -> Fetched:
        headers = {"Accept": "application/json, application/jwt, */*",
                   "User-Agent": "compute-credit-wallet", **(extra or {})}
        if content_type:
            headers["Content-Type"] = content_type
        watch = self._watchdog.start(deadline, self.IDLE_SECONDS)
        _current.watch = watch
        try:
            for attempt in (1, 2):
                try:
                    response = self._send(method, url, parts, body, headers, deadline, watch)
                except _Closed:
                    if attempt == 1:
                        continue  # the peer closed the idle connection: once more, anew
                    return self._unreachable(url, "the connection was closed twice", watch)
                except IssuerUnavailable:
                    raise
                except _NETWORK_ERRORS as err:
                    return self._unreachable(url, err, watch)
                return self._read(response, url, deadline, watch)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            _current.watch = None
            self._watchdog.finish(watch)

    def _send(self, method: str, url: str, parts: SplitResult, body: bytes | None,
              headers: dict[str, str], deadline: float, watch: _Watch) -> Any:
        options: dict[str, Any] = {
            "body": body, "redirect": False, "retries": False, "preload_content": False,
            "decode_content": False}
        proxy = self._proxy_for(parts)
        if proxy is not None:
            return self._guarded(proxy.urlopen, method, url, options, deadline, watch)
        host, port = parts.hostname or "", default_port(parts)
        addresses = self.resolver.addresses(host, port, timeout=deadline - time.monotonic())
        check_addresses(host, addresses, self.policy)
        tls = {} if parts.scheme != "https" or addresses == [host] else {
            "server_hostname": host, "assert_hostname": host}
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        options["headers"] = {**headers, "Host": parts.netloc}
        options["assert_same_host"] = False
        failure: Exception | None = None
        # Connect to the addresses that were checked, in the resolver's order (as
        # socket.create_connection would), never to a fresh lookup of the name.
        for address in addresses:
            pool = self._direct.connection_from_host(address, port, parts.scheme,
                                                     pool_kwargs=tls)
            try:
                return self._guarded(pool.urlopen, method, target, options, deadline, watch)
            except (NewConnectionError, ConnectTimeoutError) as err:
                failure = err  # nothing was sent: try the next address
                if watch.fired:
                    break
        assert failure is not None
        raise failure

    def _guarded(self, urlopen: Any, method: str, url: str, options: dict[str, Any],
                 deadline: float, watch: _Watch) -> Any:
        left = deadline - time.monotonic()
        if left <= 0 or watch.fired:
            raise IssuerUnavailable(f"{shown(origin(url))} could not be reached")
        try:
            return urlopen(method, url, timeout=urllib3.Timeout(total=left), **options)
        except urllib3.exceptions.ProtocolError as err:
            cause = err.args[1] if len(err.args) > 1 else err.__context__
            if watch.reused and not watch.fired and isinstance(
                    cause, (http.client.RemoteDisconnected, ConnectionResetError,
                            BrokenPipeError)):
                raise _Closed() from None
            raise

    def _read(self, response: Any, url: str, deadline: float, watch: _Watch) -> Fetched:
        limit = self.max_bytes
        try:
            length = response.headers.get("Content-Length", "")
            if length.strip().isdigit() and int(length) > limit:
                raise _TooLarge()
            chunks: list[bytes] = []
            size = 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or watch.fired:
                    raise TimeoutError("the deadline passed while reading the answer")
                if watch.sock is not None:
                    # Closed already when the whole answer is buffered: nothing to wait for.
                    with contextlib.suppress(OSError):
                        watch.sock.settimeout(left)
                chunk = response.read(min(self.CHUNK, limit + 1 - size), decode_content=False)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise _TooLarge()
            if watch.fired:
                raise TimeoutError("the deadline passed while reading the answer")
        except _TooLarge:
            self._drop(response)
            raise IssuerUnavailable(f"the answer is larger than {limit} bytes") from None
        except _NETWORK_ERRORS as err:
            self._drop(response)
            return self._unreachable(url, err, watch)
        response.release_conn()  # read to the end: the connection can be reused
        content_type = response.headers.get("Content-Type", "")
        return Fetched(response.status, b"".join(chunks),
                       content_type.split(";", 1)[0].strip().lower())

    @staticmethod
    def _drop(response: Any) -> None:
        response.close()  # closes its connection too: never reused half-read
        response.release_conn()

    def _unreachable(self, url: str, reason: object, watch: _Watch) -> Fetched:
        # The reason (refused, timed out, …) goes to the log only: shown to whoever typed
        # the URL, it would map the network behind this server.
        if watch.fired or time.monotonic() >= watch.deadline:
            reason = f"timed out: no complete answer within the {self.timeout:g} s deadline"
        log.warning("request to %s failed: %r", shown(origin(url)), str(reason)[:300])
        raise IssuerUnavailable(f"{shown(origin(url))} could not be reached")

    def _proxy_for(self, parts: SplitResult) -> Any:
        proxy = self._proxies.get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "",
                                                                self._proxies):
            return None
        with self._lock:
            manager = self._proxied.get(proxy)
            if manager is None:
                manager = self._proxied[proxy] = self._manager(urllib3.ProxyManager, proxy)
            return manager


class _TooLarge(Exception):
    """The answer is over the size cap."""
