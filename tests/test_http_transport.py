"""HttpTransport over real sockets: kept-alive connections, a peer that drops them,
size limits, an egress proxy from the environment, and the total deadline, concurrency
cap and circuit breaker against peers that drip, hang or answer garbage."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from tests.bad_peer import BadPeer
from wallet.core.errors import IssuerUnavailable, MalformedToken
from wallet.peers import HttpTransport, Limits
from wallet.peers.addresses import Policy, Resolver


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


def test_a_redirect_is_answered_as_it_is_never_followed(transport: HttpTransport) -> None:
    class Redirecting(_Peer):
        def do_GET(self) -> None:
            self.paths.append(self.path)
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.send_header("Content-Length", "0")
            self.end_headers()

    with _peer(do_GET=Redirecting.do_GET) as (base, peer):
        assert transport.request("GET", f"{base}/x").status == 302
        assert peer.paths == ["/x"]


# -- the total deadline ------------------------------------------------------------------

DEADLINE = 1.0


def _cut_off(mode: str) -> tuple[float, BadPeer]:
    transport = HttpTransport(timeout=DEADLINE, max_bytes=1 << 20)
    peer = BadPeer(mode, interval=DEADLINE / 4)  # every read gets a byte well in time
    try:
        started = time.monotonic()
        with pytest.raises(IssuerUnavailable, match="could not be reached"):
            transport.request("GET", peer.status_uri)
        return time.monotonic() - started, peer
    finally:
        peer.close()
        transport.close()


@pytest.mark.parametrize("mode", ["drip", "drip-head", "hang"])
def test_a_slow_peer_is_cut_off_at_the_total_deadline(
        mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """One byte a second keeps every read alive; the deadline still ends the request."""
    elapsed, peer = _cut_off(mode)
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + 1.0, elapsed
    assert peer.status_requests() == 1
    assert any("deadline" in r.getMessage() for r in caplog.records)


def test_garbage_instead_of_http_is_issuer_unavailable_at_once() -> None:
    elapsed, _ = _cut_off("garbage")
    assert elapsed < DEADLINE / 2


def test_a_well_behaved_peer_answers_through_the_same_path() -> None:
    transport = HttpTransport(timeout=DEADLINE, max_bytes=1 << 20)
    with BadPeer("ok") as peer:
        answer = transport.request("GET", peer.status_uri)
    assert answer.status == 200 and answer.body.count(b".") == 2
    assert answer.content_type == "application/statuslist+jwt"


def test_a_slow_name_lookup_counts_against_the_deadline() -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["127.0.0.1"]

    transport = HttpTransport(timeout=0.5, max_bytes=1024, resolver=Resolver(slow))
    started = time.monotonic()
    with pytest.raises(IssuerUnavailable, match="could not be resolved"):
        transport.request("GET", "http://peer.test:1/x")
    assert time.monotonic() - started < 1.0


# -- addresses: looked up once, checked, connected to -------------------------------------


def test_the_checked_address_is_the_one_connected_to_and_lookups_are_cached() -> None:
    seen: list[str] = []

    def lookup(host: str, port: int) -> list[str]:
        seen.append(host)
        return ["127.0.0.1"]

    resolver = Resolver(lookup)
    transport = HttpTransport(timeout=5, max_bytes=1024, resolver=resolver)
    with _peer() as (base, peer):
        port = base.rsplit(":", 1)[1]
        for i in range(3):
            assert transport.request("GET", f"http://issuer.test:{port}/s/{i}").status == 200
    assert seen == ["issuer.test"]  # one lookup for three requests
    assert len(peer.connections) == 1  # and one kept-alive connection


def test_private_addresses_are_refused_by_the_transport_itself() -> None:
    transport = HttpTransport(timeout=5, max_bytes=1024,
                              policy=Policy(allow_http=True, allow_private=False),
                              resolver=Resolver(lambda host, port: ["127.0.0.1"]))
    with _peer() as (base, peer):
        port = base.rsplit(":", 1)[1]
        with pytest.raises(MalformedToken, match="not a public address"):
            transport.request("GET", f"http://issuer.test:{port}/x")
        with pytest.raises(MalformedToken, match="not a public address"):
            transport.request("GET", f"{base}/x")
        assert peer.connections == []
    assert transport.guard.state(f"http://issuer.test:{port}") == "closed"  # not its fault


# -- the concurrency cap and the circuit breaker -----------------------------------------


def test_over_the_cap_a_request_is_refused_at_once() -> None:
    transport = HttpTransport(timeout=1.5, max_bytes=1024,
                              limits=Limits(max_concurrent=2, failures=0))
    with BadPeer("hang") as peer, ThreadPoolExecutor(6) as pool:
        def one(_i: int) -> tuple[float, str]:
            started = time.monotonic()
            try:
                transport.request("GET", peer.status_uri)
            except IssuerUnavailable as err:
                return time.monotonic() - started, err.message
            return time.monotonic() - started, "answered"

        results = list(pool.map(one, range(6)))
        assert peer.status_requests() == 2
    slow = [r for r in results if "could not be reached" in r[1]]
    refused = [r for r in results if "in flight" in r[1]]
    assert len(slow) == 2 and len(refused) == 4, results
    assert all(elapsed < 0.5 for elapsed, _m in refused), results


def test_the_breaker_opens_after_failures_then_one_probe_decides() -> None:
    clock = [0.0]
    transport = HttpTransport(timeout=0.3, max_bytes=1 << 20,
                              limits=Limits(failures=2, cooldown=30))
    transport.guard._clock = lambda: clock[0]  # the cool-down on a fake clock
    with BadPeer("hang") as peer:
        origin = peer.issuer.rsplit("/orgs/", 1)[0]
        for _ in range(2):
            with pytest.raises(IssuerUnavailable, match="could not be reached"):
                transport.request("GET", peer.status_uri)
        assert transport.guard.state(origin) == "open"
        started = time.monotonic()
        with pytest.raises(IssuerUnavailable, match="failed 2 times in a row"):
            transport.request("GET", peer.status_uri)
        assert time.monotonic() - started < 0.05  # at once
        assert peer.status_requests() == 2  # and without asking the peer

        clock[0] = 31.0  # cool-down over: the probe goes out, fails, the breaker reopens
        with pytest.raises(IssuerUnavailable, match="could not be reached"):
            transport.request("GET", peer.status_uri)
        assert peer.status_requests() == 3
        assert transport.guard.state(origin) == "open"
        peer.mode = "ok"  # the peer recovers; after the next cool-down one probe closes it
        clock[0] = 62.0
        assert transport.request("GET", peer.status_uri).status == 200
        assert transport.guard.state(origin) == "closed"
        assert transport.request("GET", peer.status_uri).status == 200


def test_a_5xx_answer_counts_as_a_failure_a_4xx_does_not() -> None:
    class Failing(_Peer):
        def do_GET(self) -> None:
            code = 503 if "bad" in self.path else 404
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    transport = HttpTransport(timeout=2, max_bytes=1024, limits=Limits(failures=2))
    with _peer(do_GET=Failing.do_GET) as (base, _seen):
        for _ in range(5):
            assert transport.request("GET", f"{base}/missing").status == 404
        assert transport.guard.state(base) == "closed"
        for _ in range(2):
            assert transport.request("GET", f"{base}/bad").status == 503
        assert transport.guard.state(base) == "open"


# -- TLS: the handshake is inside the deadline; the name is checked on a checked address --


def test_a_peer_that_never_finishes_the_tls_handshake_is_cut_off_at_the_deadline() -> None:
    transport = HttpTransport(timeout=DEADLINE, max_bytes=1024)
    with BadPeer("hang") as peer:  # accepts, then waits for a request head that never comes
        started = time.monotonic()
        with pytest.raises(IssuerUnavailable, match="could not be reached"):
            transport.request("GET", f"https://127.0.0.1:{peer.port}/orgs/evil/status/1")
        elapsed = time.monotonic() - started
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + 1.0, elapsed


def _certificates(tmp_path: Any, name: str) -> tuple[str, str, str]:
    """A CA, and a server certificate for `name` signed by it: (ca, cert, key) files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(files[0]), str(files[1]), str(files[2])


@pytest.mark.parametrize(("certified", "ok"), [("issuer.test", True), ("other.test", False)])
def test_https_connects_to_the_checked_address_and_verifies_the_peers_name(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, certified: str, ok: bool) -> None:
    import ssl

    ca, cert, key = _certificates(tmp_path, certified)
    monkeypatch.setenv("SSL_CERT_FILE", ca)  # the system trust store, for this test
    handler = type("Peer", (_Peer,), {"connections": [], "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    transport = HttpTransport(timeout=5, max_bytes=1024,
                              resolver=Resolver(lambda host, port: ["127.0.0.1"]))
    url = f"https://issuer.test:{server.server_address[1]}/orgs/acme/status/1"
    try:
        if ok:
            assert transport.request("GET", url).status == 200
            assert handler.paths == ["/orgs/acme/status/1"]
        else:
            with pytest.raises(IssuerUnavailable, match="could not be reached"):
                transport.request("GET", url)
            assert handler.paths == []
    finally:
        transport.close()
        server.shutdown()
        server.server_close()
