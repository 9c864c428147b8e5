"""Two real app processes on loopback with separate databases, both backends.

The exchange they run is docs/federation.md, "The exchange".

Instance A serves acme, instance B serves globex; each is `wallet serve` (gunicorn) on its
own port with its own database, keystore and instance folder. Everything is set up with
the CLI; the organisations talk to each other over real HTTP: trust (metadata and JWKS),
status lists, the redeem call and its receipt.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests import support

pytestmark = pytest.mark.slow

ADA = "ada@example.test"
PASSPHRASE = "holder passphrase 1"


def _wallet_bin() -> str:
    found = shutil.which("wallet", path=os.path.dirname(sys.executable))
    assert found, "the wallet console script is not installed next to this interpreter"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    """One running `wallet serve` and the environment its CLI commands share."""

    name: str
    port: int
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def issuer(self, slug: str) -> str:
        return f"{self.base}/orgs/{slug}"

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([_wallet_bin(), *args], env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def start(self) -> None:
        with (self.folder / "server.log").open("wb") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                [_wallet_bin(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited early:\n{self.log()}")
            try:
                status, body = http("GET", f"{self.base}/healthz")
                if status == 200 and body.get("database") == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{self.name} did not become healthy:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # gunicorn's master stops its workers on SIGTERM
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)  # the group this test started, by its id
            self.process.wait(5)

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-4000:]


def http(method: str, url: str, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request; returns (status, decoded JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 (loopback)
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310
            raw, status = answer.read(), answer.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@pytest.fixture
def second_db_url(backend: str, _templates: Any, tmp_path: Path) -> Iterator[str]:
    """Another fresh, migrated database, made the way conftest makes `db_url`."""
    with _templates.database(backend, tmp_path, "instance-b") as url:
        yield url


def _instance(name: str, url: str, tmp_path: Path) -> Instance:
    port = _free_port()
    folder = tmp_path / name
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update({
        "WALLET_DATABASE_URL": url,
        "WALLET_BASE_URL": f"http://127.0.0.1:{port}",
        "WALLET_INSTANCE_PATH": str(folder / "instance"),
        "WALLET_KEYSTORE": str(folder / "keys"),
        "WALLET_SECRET_KEY": f"two-instance-secret-{name}-" + "s" * 32,
        "WALLET_KEY_PASSPHRASE": f"two-instance-passphrase-{name}",
        "WALLET_ARGON2_TIME_COST": "1",
        "WALLET_ARGON2_MEMORY_KIB": "1024",
    })
    return Instance(name, port, env, folder)


@pytest.fixture
def instances(db_url: str, second_db_url: str,
              tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    a, b = _instance("a", db_url, tmp_path), _instance("b", second_db_url, tmp_path)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_honour_across_two_real_instances(instances: tuple[Instance, Instance],
                                          tmp_path: Path) -> None:
    a, b = instances
    password = tmp_path / "password"
    password.write_text(support.PASSWORD + "\n")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")

    # Instance A: acme, funded, ada with 500.00 available, a signing key, ada's token.
    a.cli("org", "create", "acme", "--name", "Acme AI", "--admin-email", "admin@acme.test",
          "--password-file", str(password))
    a.cli("person", "add", "--org", "acme", "--email", ADA, "--password-file", str(password))
    a.cli("fund", "--org", "acme", "--amount", "10000.00", "--idempotency-key", "seed")
    a.cli("grant", "create", "--org", "acme", "--email", ADA, "--amount", "500.00")
    a.cli("keys", "generate", "--org", "acme")
    a_token = a.cli("token", "create", "--org", "acme", "--email", ADA).stdout.strip()
    # Instance B: globex, ada, a signing key, ada's token.
    b.cli("org", "create", "globex", "--name", "Globex", "--admin-email", "admin@globex.test",
          "--password-file", str(password))
    b.cli("person", "add", "--org", "globex", "--email", ADA, "--password-file", str(password))
    b.cli("keys", "generate", "--org", "globex")
    b_token = b.cli("token", "create", "--org", "globex", "--email", ADA).stdout.strip()

    # Trust both ways, over HTTP: each pins the other's metadata and keys.
    trusted = b.cli("trust", "add", "--org", "globex", a.issuer("acme"), "--json")
    a_jwks = http("GET", f"{a.issuer('acme')}/jwks.json")[1]
    assert {k["kid"] for k in json.loads(trusted.stdout)["keys"]} == \
        {k["kid"] for k in a_jwks["keys"]}
    a.cli("trust", "add", "--org", "acme", b.issuer("globex"))

    # ada makes a holder key and exports a note at A through the API.
    key_file = tmp_path / "holder.key"
    holder_jwk = json.loads(b.cli("keys", "holder-new", "--out", str(key_file),
                                  "--passphrase-file", str(passphrase)).stdout)
    holder_jwk.pop("kid", None)
    status, exported = http("POST", f"{a.base}/api/v1/orgs/acme/me/notes",
                            {"amount": "100.00", "holder_jwk": holder_jwk},
                            {"Authorization": f"Bearer {a_token}", "Idempotency-Key": "exp-1"})
    assert status == 201, exported
    note_file = tmp_path / "note.txt"
    note_file.write_text(exported["note"] + "\n")

    # A nonce at B, the presentation signed by the CLI, the honour at B.
    status, issued = http("POST", f"{b.base}/api/v1/orgs/globex/nonces",
                          headers={"Authorization": f"Bearer {b_token}"})  # bound to ada
    assert status == 201 and issued["audience"] == b.issuer("globex") and issued["bound"]
    presented = json.loads(b.cli(
        "note", "present", str(note_file), "--key", str(key_file), "--audience",
        b.issuer("globex"), "--nonce", issued["nonce"],
        "--passphrase-file", str(passphrase)).stdout)
    status, honoured = http("POST", f"{b.base}/api/v1/orgs/globex/honour", presented,
                            {"Authorization": f"Bearer {b_token}", "Idempotency-Key": "hon-1"})

    assert status == 200, honoured
    assert honoured["honoured"] == 1 and honoured["balance"]["available"] == "100.00"
    (result,) = honoured["results"]
    assert result["jti"] == exported["jti"] and result["issuer"] == a.issuer("acme")

    # The receipt: signed by acme's published key, for globex, for this note.
    receipt = result["receipt"]
    kid = jwt.get_unverified_header(receipt)["kid"]
    (jwk,) = [k for k in a_jwks["keys"] if k["kid"] == kid]
    claims = jwt.decode(receipt, key=jwt.PyJWK(jwk, algorithm="EdDSA"), algorithms=["EdDSA"],
                        audience=b.issuer("globex"), issuer=a.issuer("acme"))
    assert claims["sub"] == exported["jti"] and claims["status"] == "redeemed"
    assert claims["amount"] == {"value": "100.00", "currency": "USD"}

    # The same request again: the stored answer, nothing credited twice.
    status, again = http("POST", f"{b.base}/api/v1/orgs/globex/honour", presented,
                         {"Authorization": f"Bearer {b_token}", "Idempotency-Key": "hon-1"})
    assert status == 200 and again == honoured

    # A's view: the note is redeemed; ada keeps 400.00 at acme and has 100.00 at globex.
    status, mine = http("GET", f"{a.base}/api/v1/orgs/acme/me/notes",
                        headers={"Authorization": f"Bearer {a_token}"})
    assert status == 200
    assert [n["state"] for n in mine["notes"] if n["jti"] == exported["jti"]] == ["redeemed"]
    at_a = json.loads(a.cli("balance", "--org", "acme", "--email", ADA, "--json").stdout)
    at_b = json.loads(b.cli("balance", "--org", "globex", "--email", ADA, "--json").stdout)
    assert at_a["available"] == "400.00" and at_a["outstanding_notes"] == "0.00"
    assert at_b["available"] == "100.00"

    # Settlement agrees to the micro on both sides.
    (a_line,) = json.loads(a.cli("settlement", "list", "--org", "acme", "--json").stdout)
    (b_line,) = json.loads(b.cli("settlement", "list", "--org", "globex", "--json").stdout)
    assert a_line["counterparty"] == b.issuer("globex")
    assert b_line["counterparty"] == a.issuer("acme")
    assert a_line["we_owe"] == b_line["they_owe"] == "100.00"
    assert a_line["redeemed_by_them"] == b_line["honoured_from_them"] == "100.00"
    assert a_line["redeemed_count"] == b_line["honoured_count"] == 1
    assert a_line["they_owe"] == b_line["we_owe"] == "0.00"

    # And both ledgers check clean.
    for inst in (a, b):
        checked = inst.cli("ledger", "check")
        assert checked.returncode == 0 and "ok" in checked.stdout
    for inst in (a, b):
        assert "Traceback" not in inst.log(), inst.log()
