"""Helpers for the crash test (tests/test_crash.py): real instances that can be killed.

An `Instance` is one `wallet serve` (gunicorn) in its own session, so `kill()` sends
SIGKILL to its whole process group (master and workers, by the group id this test
started) — a crash, not a shutdown: no request finishes, no transaction commits.

How the client reaches the servers is isolated in three small functions, so that a
change to the protocol touches one place each: `api_token` (how an engineer signs in to
the API), `fetch_nonce` (how an engineer asks a verifier for a nonce) and `send` (one
HTTP request).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask


def wallet_bin() -> str:
    found = shutil.which("wallet", path=os.path.dirname(sys.executable))
    assert found, "the wallet console script is not installed next to this interpreter"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Down(Exception):
    """The request got no HTTP answer: refused (the server is not up) or cut off mid-way."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


def send(port: int, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """One request on a fresh connection; (status, decoded JSON or text), or `Down`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        answer = conn.getresponse()
        raw, status = answer.read(), answer.status
    except (OSError, http.client.HTTPException) as err:
        raise Down(f"{method} {path}: {type(err).__name__}: {err}",
                   refused=isinstance(err, ConnectionRefusedError)) from None
    finally:
        conn.close()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class Instance:
    """One `wallet serve` on loopback with its own database, keystore and secrets."""

    name: str
    url: str
    folder: Path
    port: int = field(default_factory=free_port)
    extra: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def issuer(self, slug: str) -> str:
        return f"{self.base}/orgs/{slug}"

    def config(self) -> dict[str, Any]:
        return {
            "WALLET_DATABASE_URL": self.url,
            "WALLET_BASE_URL": self.base,
            "WALLET_INSTANCE_PATH": str(self.folder / "instance"),
            "WALLET_KEYSTORE": str(self.folder / "keys"),
            "WALLET_SECRET_KEY": f"crash-instance-{self.name}-" + "k" * 32,
            "WALLET_KEY_PASSPHRASE": f"crash-key-passphrase-{self.name}",
            "WALLET_ARGON2_TIME_COST": 1,
            "WALLET_ARGON2_MEMORY_KIB": 1024,
            # Every client is 127.0.0.1: lift the per-address limit of nonces and redeem.
            "WALLET_PUBLIC_RATE_PER_MINUTE": 10**9,
            **self.extra,
        }

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env.update({k: str(v) for k, v in self.config().items()})
        return env

    def app(self) -> Flask:
        """An in-process app on the same database and keystore (set-up and checks)."""
        from wallet import create_app

        return create_app(self.config())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([wallet_bin(), *args], env=self.env(), capture_output=True,
                              text=True, timeout=120, check=False)

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until /healthz answers with the database reachable; seconds taken."""
        self.folder.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with (self.folder / "server.log").open("ab") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                [wallet_bin(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--threads", "4"], env=self.env(), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            try:
                status, body = send(self.port, "GET", "/healthz", timeout=5)
                if status == 200 and isinstance(body, dict) and body.get("database") == "ok":
                    return time.monotonic() - began
            except Down:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not become healthy:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole instance (its process group) and wait until it is gone."""
        assert self.process is not None
        pgid = self.process.pid  # start_new_session: the master leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.process.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # workers are reaped by init, not by us
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: processes of group {pgid} survived SIGKILL")

    def stop(self) -> None:
        """Shut down (test teardown): SIGTERM, then SIGKILL to the group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self, tail: int = 4000) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


# -- how the engineer reaches the servers (one function each, easy to adapt) --------------


def api_token(app: Flask, *, slug: str, email: str) -> str:
    """A personal API token for `email` at `slug` (how the engineer signs in to the API)."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        value, _row = orgs.create_token(db.session(), slug=slug, email=email, actor=Actor.cli())
        return value


def fetch_nonce(verifier: Instance, *, slug: str, token: str) -> tuple[int, Any]:
    """Ask the verifier for a presentation nonce, as the engineer (bearer token)."""
    return send(verifier.port, "POST", f"/api/v1/orgs/{slug}/nonces", None,
                {"Authorization": f"Bearer {token}"})
