"""HttpTransport over real sockets: kept-alive connections, a peer that drops them,
size limits, and an egress proxy from the environment."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from wallet.core.errors import IssuerUnavailable
from wallet.federation import HttpTransport


class _Peer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list[int]
    paths: list[str]
    body = b'{"ok": true}'
    close_after_answer = False

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def do_GET(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)
        if self.close_after_answer:  # what a server does when its keep-alive time is up
            self.close_connection = True

    do_POST = do_GET

    def log_message(self, *_args: Any) -> None:
        pass


@contextmanager
def _peer(**attributes: Any) -> Iterator[tuple[str, type[_Peer]]]:
    handler = type("Peer", (_Peer,), {"connections": [], "paths": [], **attributes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    made = HttpTransport(timeout=5, max_bytes=1024)
    yield made
    made.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_requests_to_one_peer_share_a_kept_alive_connection(transport: HttpTransport) -> None:
    with _peer() as (base, peer):
        for i in range(3):
            answer = transport.request("POST", f"{base}/orgs/acme/redeem?n={i}", body=b"{}",
                                       content_type="application/json")
            assert (answer.status, answer.body, answer.content_type) == (
                200, b'{"ok": true}', "application/json")
        assert peer.paths == [f"/orgs/acme/redeem?n={i}" for i in range(3)]
        assert len(peer.connections) == 1


def test_a_connection_the_peer_closed_is_replaced_and_the_request_sent_once(
        transport: HttpTransport) -> None:
    with _peer(close_after_answer=True) as (base, peer):
        for _ in range(3):
            assert transport.request("GET", f"{base}/x").status == 200
        assert len(peer.paths) == 3  # no request was lost or sent twice
        assert len(peer.connections) == 3


def test_an_idle_connection_is_not_reused_after_the_idle_limit(
        transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HttpTransport, "IDLE_SECONDS", 0.0)
    with _peer() as (base, peer):
        transport.request("GET", f"{base}/a")
        transport.request("GET", f"{base}/b")
        assert len(peer.connections) == 2


def test_an_answer_over_the_size_limit_is_refused_and_its_connection_dropped() -> None:
    transport = HttpTransport(timeout=5, max_bytes=8)
    with _peer() as (base, peer):
        with pytest.raises(IssuerUnavailable, match="larger than 8 bytes"):
            transport.request("GET", f"{base}/big")
        with pytest.raises(IssuerUnavailable):
            transport.request("GET", f"{base}/big")
        assert len(peer.connections) == 2


def test_a_refused_connection_is_issuer_unavailable() -> None:
    with _peer() as (base, _peer_class):
        pass  # the server is gone: its port refuses connections
    with pytest.raises(IssuerUnavailable, match="could not be reached"):
        HttpTransport(timeout=2, max_bytes=1024).request("GET", f"{base}/x")


def test_an_egress_proxy_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with _peer() as (proxy, seen):
        monkeypatch.setenv("http_proxy", proxy)
        monkeypatch.setenv("no_proxy", "")
        answer = HttpTransport(timeout=5, max_bytes=1024).request(
            "GET", "http://issuer.example/orgs/acme/status/1")
    assert answer.status == 200
    assert seen.paths == ["http://issuer.example/orgs/acme/status/1"]  # absolute: proxied
