"""A misbehaving issuer on loopback, for the slow- and malicious-peer tests.

It answers its metadata and JWKS honestly (so that `trust add` pins it) and misbehaves on
its status lists, as chosen by `mode`:

- `ok`: a correct signed status list (entry 5 valid);
- `drip`: the head at once, then the body one byte a second (or every `interval`);
- `drip-head`: the status line and headers one byte at a time, likewise;
- `hang`: accept the connection, read the request, never answer;
- `garbage`: bytes that are not HTTP, then close.

Raw sockets, one thread per connection, all stopped by `close()`: the test decides every
byte the peer sends.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose, notes, status
from wallet.core.money import Money

MODES = ("ok", "drip", "drip-head", "hang", "garbage")


class BadPeer:
    """A loopback issuer `http://127.0.0.1:<port>/orgs/evil` whose status lists misbehave."""

    def __init__(self, mode: str = "ok", *, interval: float = 1.0) -> None:
        assert mode in MODES, mode
        self.mode, self.interval = mode, interval  # seconds between dripped bytes
        self.key = Ed25519PrivateKey.generate()
        self.kid = jose.thumbprint(jose.public_jwk(self.key))
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self._listener.getsockname()[1])
        self.issuer = f"http://127.0.0.1:{self.port}/orgs/evil"
        self.status_uri = f"{self.issuer}/status/1"
        self.requests: list[str] = []  # request lines, in arrival order
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    # -- what an honest issuer publishes ------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        api = f"http://127.0.0.1:{self.port}/api/v1/orgs/evil"
        return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks.json",
                "name": "Evil Corp", "redeem_endpoint": f"{api}/redeem",
                "nonce_endpoint": f"{api}/nonces", "revoked_keys": [], "retired_keys": []}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**jose.public_jwk(self.key), "kid": self.kid}]}

    def status_list(self) -> str:
        now = int(time.time())
        claims = status.claims(uri=self.status_uri, packed=status.build(16, []), iat=now,
                               ttl=60, exp=now + 3600)
        return jose.sign({"alg": "EdDSA", "typ": status.TYP, "kid": self.kid}, claims, self.key)

    def note(self, amount_micros: int = 5_000_000) -> str:
        """A genuine note of this issuer (entry 5 of its status list) for a fresh holder."""
        now = int(time.time())
        holder = jose.public_jwk(Ed25519PrivateKey.generate())
        return notes.issue(issuer=self.issuer, jti=notes.new_jti(secrets.token_bytes(16)),
                           iat=now - 5, exp=now + 3600, amount=Money(amount_micros, "USD"),
                           holder_jwk=holder, status_uri=self.status_uri, status_idx=5,
                           kid=self.kid, key=self.key)

    # -- the server ---------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accepting.join(5)

    def __enter__(self) -> BadPeer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def status_requests(self) -> int:
        with self._lock:
            return sum(1 for line in self.requests if "/status/" in line)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                with self._lock:
                    self.requests.append(line)
                path = line.split(" ")[1] if line.count(" ") >= 2 else "/"
                self._answer(conn, path)
            except OSError:
                pass  # the client gave up: what these tests want it to do

    def _answer(self, conn: socket.socket, path: str) -> None:
        if path == "/.well-known/jwt-vc-issuer/orgs/evil":
            self._send(conn, 200, json.dumps(self.metadata()).encode(), "application/json")
        elif path == "/orgs/evil/jwks.json":
            self._send(conn, 200, json.dumps(self.jwks()).encode(), "application/json")
        elif path.startswith("/orgs/evil/status/"):
            self._misbehave(conn)
        else:
            self._send(conn, 404, b"{}", "application/json")

    def _misbehave(self, conn: socket.socket) -> None:
        body = self.status_list().encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/statuslist+jwt\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        if self.mode == "ok":
            conn.sendall(head + body)
        elif self.mode == "drip":
            conn.sendall(head)
            self._drip(conn, body)
        elif self.mode == "drip-head":
            self._drip(conn, head + body)
        elif self.mode == "hang":
            self._stop.wait(60)
        else:  # garbage
            conn.sendall(b"\x16\x03\x01\x02\x00 this is not HTTP \xff\xfe\r\n\r\n")

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._stop.is_set():
                return
            conn.sendall(data[i:i + 1])
            self._stop.wait(self.interval)

    @staticmethod
    def _send(conn: socket.socket, code: int, body: bytes, content_type: str) -> None:
        conn.sendall((f"HTTP/1.1 {code} X\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
                     + body)
