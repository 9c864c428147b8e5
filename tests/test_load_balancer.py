"""Two real instances behind a real HAProxy over one PostgreSQL (docs/deployment.md).

The balancer runs deploy/haproxy.cfg itself, only its paths and ports swapped for the
test's (and its connections to the instances made from 127.0.0.2, the address the
instances trust as their balancer); each instance is gunicorn with deploy/gunicorn.conf.py,
as `make serve-prod` runs it, in production mode behind TLS that HAProxy terminates, on its
own port and instance folder, with the same database and secrets. Requests are steered to
one instance or the other through HAProxy's runtime API (the others drained, as
docs/deployment.md drains an instance), and every steered block is checked against
HAProxy's per-server request counters.

Shown: a nonce issued through one instance is spent once through the other; the sign-in
throttle counts across both (and neither a forged X-Forwarded-For through the balancer nor
one sent straight to an instance escapes it); the instances see https from the balancer;
a rate limit counts across both (one quota, not one per instance); an Idempotency-Key
replayed on the other instance gets the stored answer; SIGKILL of one instance while
clients write through the balancer loses no request that was answered 2xx (each is in
the database as answered, once), the ledger stays sound, and the instance is taken back
when it returns.

PostgreSQL only (WALLET_TEST_POSTGRES_URL). Without it, or without HAProxy
($WALLET_TEST_HAPROXY, else `haproxy` on PATH or /usr/sbin/haproxy), the tests are skipped
with the reason; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from flask import Flask

from tests import fed_support as fs
from tests import support
from tests.conftest import IN_CI, PG_ENV

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"
HAPROXY_ENV = "WALLET_TEST_HAPROXY"
BALANCER_SOURCE = "127.0.0.2"  # HAProxy reaches the instances from here; the test from 127.0.0.1
SERVERS = ("wallet1", "wallet2")
ADA = fs.ADA
MODEL = "claude-sonnet-4"  # 3.00 in, 15.00 out per million tokens (the shipped catalogue)
NONCE_QUOTA = 6  # anonymous nonce requests per client address and minute, on the instances


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the load-balancer tests must run; .ci/run installs"
                    " haproxy and starts PostgreSQL)")
    pytest.skip(reason)


def _haproxy() -> str:
    given = os.environ.get(HAPROXY_ENV)
    if given:
        if not os.access(given, os.X_OK):
            _unavailable(f"{HAPROXY_ENV}={given} is not an executable")
        return given
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None)
    if not found:
        _unavailable(f"HAProxy is not installed: `sudo apt-get install -y haproxy` (Debian,"
                     f" Ubuntu), or set {HAPROXY_ENV} to its binary")
    return str(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secret() -> str:
    """A production-grade secret (config.py refuses development words in them)."""
    while True:
        value = secrets.token_urlsafe(48)
        if not any(word in value.lower() for word in
                   ("dev", "change", "secret", "test", "example", "password")):
            return value


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (HAProxy's cert+key PEM, the client's CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    bundle, ca = folder / "balancer.pem", folder / "ca.pem"
    bundle.write_bytes(cert_pem + key_pem)
    bundle.chmod(0o600)
    ca.write_bytes(cert_pem)
    return bundle, ca


# -- HTTP ---------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def code(self) -> str | None:
        try:
            found = self.json()
        except ValueError:
            return None
        return found.get("code") if isinstance(found, dict) else None


def send(url: str, method: str = "GET", *, body: Any = None, form: dict[str, str] | None = None,
         headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
         timeout: float = 20) -> Answer:
    """One request on a fresh connection; redirects are answers, not followed."""
    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                           context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    sent = dict(headers or {})
    data: bytes | None = None
    if body is not None:
        data, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif form is not None:
        data = urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                     body=data, headers=sent)
        resp = conn.getresponse()
        raw = resp.read()
        cookies = {}
        for line in resp.headers.get_all("Set-Cookie") or []:
            pair = line.split(";", 1)[0]
            if "=" in pair:
                name, value = pair.split("=", 1)
                cookies[name.strip()] = value.strip()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, cookies,
                      raw.decode(errors="replace"))
    finally:
        conn.close()


# -- the processes --------------------------------------------------------------------------


@dataclass
class Instance:
    """One gunicorn (deploy/gunicorn.conf.py) serving the shared database."""

    name: str
    port: int
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def direct(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
        assert gunicorn, "gunicorn is not installed next to this interpreter"
        with (self.folder / "server.log").open("ab") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                [gunicorn, "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{self.port}",
                 "--workers", "2"], cwd=self.folder, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, deadline: float) -> None:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited early:\n{self.log()}")
            try:
                answer = send(f"{self.direct}/healthz", timeout=2)
                if answer.status == 200 and answer.json().get("database") == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not become healthy:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the master and its workers at once (its own process group), as a
        machine that loses power would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # graceful: the master stops its workers
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this test started
            self.process.wait(5)

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-6000:]


@dataclass
class Balancer:
    """HAProxy running deploy/haproxy.cfg, and its runtime API."""

    port: int
    folder: Path
    context: ssl.SSLContext
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def admin(self) -> Path:
        return self.folder / "admin.sock"

    def configure(self, pem: Path, instances: list[Instance]) -> Path:
        text = HAPROXY_CFG.read_text()
        swaps = [
            (r"^    log /dev/log local0$", "    log stdout format raw local0"),
            (r"^    (chroot|user|group|daemon)\b.*\n", ""),
            (r"/run/haproxy/admin\.sock", str(self.admin)),
            (r"^    bind :443 ssl crt \S+ alpn \S+$",
             f"    bind 127.0.0.1:{self.port} ssl crt {pem} alpn http/1.1"),
            (r"^    bind :80\n", ""),
        ]
        for inst in instances:
            swaps.append((rf"^    server {inst.name} \S+$",
                          f"    server {inst.name} 127.0.0.1:{inst.port} source {BALANCER_SOURCE}"))
        for pattern, replacement in swaps:
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            assert count, f"deploy/haproxy.cfg changed: nothing matches {pattern!r}"
        path = self.folder / "haproxy.cfg"
        path.write_text(text)
        return path

    def start(self, binary: str, config: Path) -> None:
        checked = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True,
                                 text=True, timeout=30, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with (self.folder / "haproxy.log").open("ab") as log:
            self.process = subprocess.Popen([binary, "-f", str(config)], cwd=self.folder,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.admin))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: name -> columns (status, stot, ...)."""
        lines = self.command("show stat").splitlines()
        rows = csv.DictReader([lines[0].lstrip("# ")] + [x for x in lines[1:] if x])
        return {row["svname"]: row for row in rows
                if row["pxname"] == "wallet" and row["svname"] in SERVERS}

    def wait_status(self, name: str, wanted: str, deadline: float) -> None:
        status = ""
        while time.monotonic() < deadline:
            try:
                status = self.servers()[name]["status"]
            except (OSError, KeyError, IndexError):
                status = "no answer"
            if status == wanted:  # not "UP 1/2" (one check failed) nor "DOWN 1/2"
                return
            time.sleep(0.1)
        pytest.fail(f"HAProxy: {name} is {status!r}, not {wanted}:\n{self.log()}")

    @contextmanager
    def through(self, name: str) -> Iterator[None]:
        """Send what follows to instance `name` only (the others drained: up and checked,
        but given no new requests), and check that it served every request of the block."""
        for other in SERVERS:
            self.command(f"set server wallet/{other} state {'ready' if other == name else 'drain'}")
        try:
            for other in SERVERS:
                if other != name:
                    self.wait_status(other, "DRAIN", time.monotonic() + 10)
            self.wait_status(name, "UP", time.monotonic() + 10)
            before = {n: int(row["stot"]) for n, row in self.servers().items()}
            try:
                yield
            except BaseException:
                print(f"HAProxy's log:\n{self.log()}")  # shown with the failure
                raise
            after = {n: int(row["stot"]) for n, row in self.servers().items()}
            assert after[name] > before[name], f"{name} served nothing"
            assert all(after[n] == before[n] for n in SERVERS if n != name), (before, after)
        finally:
            for other in SERVERS:
                self.command(f"set server wallet/{other} state ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def log(self) -> str:
        return (self.folder / "haproxy.log").read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    app: Flask  # the test's own app on the same database: set-up and checks
    balancer: Balancer
    instances: dict[str, Instance]
    holder: Ed25519PrivateKey
    notes: list[fs.Exported]
    service_token: str  # acme's gateway
    ada_globex: str  # ada's personal token at globex

    def call(self, method: str, path: str, *, token: str | None = None, key: str | None = None,
             body: Any = None, **kwargs: Any) -> Answer:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["Idempotency-Key"] = key
        return send(self.balancer.base + path, method, body=body, headers=headers,
                    context=self.balancer.context, **kwargs)

    def issuer(self, slug: str) -> str:
        return f"{self.balancer.base}/orgs/{slug}"


def _prepare(app: Flask, base: str) -> tuple[Ed25519PrivateKey, list[fs.Exported], str, str]:
    """acme (issuer; a gateway's service token) and globex (verifier), each trusting the
    other, on the shared database: made once, in this process, with the instances' secrets."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions import trust as trust_actions
    from wallet.actions._base import Actor

    support.build_world(app)
    fs.generate_keys(app, "acme", "globex")  # encrypted in the database: no shared disk
    with app.app_context():  # each trusts the other (acme redeems only for issuers it trusts)
        for verifier, issuer in (("globex", "acme"), ("acme", "globex")):
            trust_actions.add(db.session(), slug=verifier, issuer=f"{base}/orgs/{issuer}",
                              actor=Actor.cli())
    fs.give(app, "acme", ADA, "5000.00")
    with app.app_context():  # fresh accounts for the throttle checks (one count each)
        for check in ("wallet1", "wallet2", "None"):
            for attempt in range(3):
                orgs.add_person(db.session(), slug="acme",
                                email=f"throttle-{check}-{attempt}@acme.test",
                                password=support.PASSWORD, actor=Actor.cli())
    holder = Ed25519PrivateKey.generate()
    notes = [fs.export(app, holder, "100.00"), fs.export(app, holder, "30.00")]
    with app.app_context():
        service, _ = orgs.create_token(db.session(), slug="acme", email=None, actor=Actor.cli())
    return holder, notes, service, fs.api_token(app, "globex")


@pytest.fixture(scope="module")
def cluster(_templates: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not os.environ.get(PG_ENV):
        _unavailable(f"{PG_ENV} is not set: the load-balancer tests need PostgreSQL (instances"
                     " behind a balancer share one database)")
    binary = _haproxy()
    from wallet import create_app

    folder = tmp_path_factory.mktemp("load-balancer")
    pem, ca = _certificate(folder)
    context = ssl.create_default_context(cafile=str(ca))
    balancer = Balancer(_free_port(), folder, context)
    secret_key, passphrase = _secret(), _secret()
    with _templates.database("postgresql", folder) as url:
        app = create_app(support.test_config(
            url, folder / "setup", WALLET_BASE_URL=balancer.base, WALLET_KEY_STORAGE="db",
            WALLET_SECRET_KEY=secret_key, WALLET_KEY_PASSPHRASE=passphrase))
        instances: dict[str, Instance] = {}
        try:
            holder, notes, service, ada_globex = _prepare(app, balancer.base)
            for name in SERVERS:
                home = folder / name
                home.mkdir()
                env = {k: v for k, v in os.environ.items()
                       if not k.startswith(("WALLET_", "GUNICORN_", "WEB_CONCURRENCY",
                                            "FORWARDED_ALLOW_IPS"))}
                env.update({
                    "WALLET_ENV": "production",
                    "WALLET_BASE_URL": balancer.base,  # every instance: the balancer's URL
                    "WALLET_DATABASE_URL": url,
                    "WALLET_SECRET_KEY": secret_key,  # the same on every instance
                    "WALLET_KEY_PASSPHRASE": passphrase,
                    "WALLET_KEY_STORAGE": "db",
                    "WALLET_INSTANCE_PATH": str(home / "instance"),
                    "WALLET_KEYSTORE": str(home / "keys"),
                    "WALLET_ARGON2_TIME_COST": "1",
                    "WALLET_ARGON2_MEMORY_KIB": "1024",
                    "FORWARDED_ALLOW_IPS": BALANCER_SOURCE,  # the balancer, and only it
                    # A key whose request died with its instance is free again after this
                    # (60 s by default; the kill test's clients retry until then).
                    "WALLET_IDEMPOTENCY_LEASE_SECONDS": "5",
                    # Anonymous nonces: a small quota, so that the rate-limit test reaches it.
                    "WALLET_RATE_LIMITS": f"nonces:anonymous={NONCE_QUOTA}",
                })
                instances[name] = Instance(name, _free_port(), env, home)
            for inst in instances.values():
                inst.start()
            deadline = time.monotonic() + 60
            for inst in instances.values():
                inst.wait_healthy(deadline)
            balancer.start(binary, balancer.configure(pem, list(instances.values())))
            for name in SERVERS:
                balancer.wait_status(name, "UP", deadline)
            yield Cluster(app, balancer, instances, holder, notes, service, ada_globex)
            for inst in instances.values():
                assert "Traceback" not in inst.log(), inst.log()
        finally:
            balancer.stop()
            for inst in instances.values():
                inst.stop()
            app.extensions["wallet.engine"].dispose()


def _count(app: Flask, statement: Any) -> int:
    from wallet import db

    with app.app_context():
        s = db.session()
        value = int(s.execute(statement).scalar_one())
        s.rollback()
        return value


# -- the tests --------------------------------------------------------------------------------


def test_a_nonce_issued_through_one_instance_is_spent_once_through_the_other(
        cluster: Cluster) -> None:
    from wallet.core import notes
    from wallet.models import Nonce

    lb, first, second = cluster.balancer, *cluster.notes
    with lb.through("wallet1"):
        issued = cluster.call("POST", "/api/v1/orgs/globex/nonces", token=cluster.ada_globex)
    assert issued.status == 201, issued.text
    nonce = issued.json()["nonce"]
    assert issued.json()["bound"] and issued.json()["audience"] == cluster.issuer("globex")

    def presented(note: fs.Exported) -> dict[str, Any]:
        return {"presentations": [notes.present(
            note.token, holder_key=cluster.holder, audience=cluster.issuer("globex"),
            nonce=nonce, iat=int(time.time()))]}

    with lb.through("wallet2"):
        honoured = cluster.call("POST", "/api/v1/orgs/globex/honour", token=cluster.ada_globex,
                                key="honour-1", body=presented(first))
    assert honoured.status == 200, honoured.text
    assert honoured.json()["honoured"] == 1

    # The same nonce under another note, through either instance: spent.
    for name, key in (("wallet1", "honour-2"), ("wallet2", "honour-3")):
        with lb.through(name):
            again = cluster.call("POST", "/api/v1/orgs/globex/honour",
                                 token=cluster.ada_globex, key=key, body=presented(second))
        assert again.status == 422 and again.code == "nonce_invalid", (name, again.text)

    assert _count(cluster.app, sa.select(sa.func.count()).select_from(Nonce)) == 1
    assert fs.note_state(cluster.app, first.jti) == "redeemed"
    assert fs.note_state(cluster.app, second.jti) == "active"
    assert fs.wallet_balance(cluster.app, "globex") == first.amount


_CSRF = support._CSRF
FREE_FAILURES = 5  # WALLET_LOGIN_FREE_FAILURES; the next attempt then waits 2 s


@dataclass
class _Form:
    """A sign-in form as a browser holds it: its session cookie and CSRF token."""

    base: str
    cookie: str
    token: str

    def post(self, cluster: Cluster, email: str, password: str, *,
             headers: dict[str, str] | None = None) -> Answer:
        return send(f"{self.base}/login", "POST", context=cluster.balancer.context,
                    headers={"Cookie": self.cookie, "Referer": f"{self.base}/login",
                             **(headers or {})},
                    form={"email": email, "password": password, "csrf_token": self.token})


def _form(cluster: Cluster, base: str, headers: dict[str, str] | None = None) -> _Form:
    page = send(f"{base}/login", headers=headers, context=cluster.balancer.context)
    match = _CSRF.search(page.text)
    assert page.status == 200 and match, page.text[:300]
    return _Form(base, "; ".join(f"{k}={v}" for k, v in page.cookies.items()),
                 match.group(1) or match.group(2))


def _forged(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, "X-Real-IP": address, "Forwarded": f"for={address}"}


def _throttled(cluster: Cluster, email: str, *, check_via: str | None) -> tuple[Answer, float]:
    """Five failed sign-ins of `email`, each form fetched through one instance and sent
    through the other (the session and its CSRF token live in the database), each claiming
    another client address; then at once the right password, through `check_via` (None:
    straight to wallet2, past the balancer, claiming another address and https). Returns
    that answer and the seconds since the last failure's."""
    lb = cluster.balancer
    direct = cluster.instances["wallet2"].direct
    if check_via is None:  # fetched first, so that the check is one request
        forged = {**_forged("203.0.113.9"), "X-Forwarded-Proto": "https"}
        check = _form(cluster, direct, forged)
    else:
        forged = _forged("203.0.113.77")
        with lb.through(check_via):
            check = _form(cluster, lb.base, forged)
    last = 0.0
    for i in range(FREE_FAILURES):
        page_via, post_via = SERVERS[i % 2], SERVERS[(i + 1) % 2]
        with lb.through(page_via):
            form = _form(cluster, lb.base, _forged(f"198.51.100.{i + 1}"))
        with lb.through(post_via):
            r = form.post(cluster, email, "wrong-wrong-1", headers=_forged(f"198.51.100.{i}"))
            last = time.monotonic()
        assert r.status == 401, (i, r.status, r.text[:300])
    if check_via is None:
        answer = check.post(cluster, email, support.PASSWORD, headers=forged)
    else:
        with lb.through(check_via):
            answer = check.post(cluster, email, support.PASSWORD, headers=forged)
    return answer, time.monotonic() - last


@pytest.mark.parametrize("check_via", ["wallet1", "wallet2", None],
                         ids=["via-wallet1", "via-wallet2", "direct-forged"])
def test_the_sign_in_throttle_counts_across_instances_whatever_address_is_claimed(
        cluster: Cluster, check_via: str | None) -> None:
    """The sixth attempt (even with the right password) waits: the five failures counted
    on both instances, all for the client's real address 127.0.0.1, whatever it claimed.
    Straight to an instance, the forged headers are dropped (the peer is not the balancer):
    were they believed, the check would be a fresh address over https, and pass."""
    for attempt in range(3):  # a machine so busy that the 2 s passed proves nothing: again
        email = f"throttle-{check_via}-{attempt}@acme.test"
        r, elapsed = _throttled(cluster, email, check_via=check_via)
        if r.status == 429 or elapsed < 1.5:
            break
    assert r.status == 429, (check_via, r.status, round(elapsed, 2), r.text[:300])
    assert 0 < int(r.headers["retry-after"]) <= 2


def test_the_instances_see_https_from_the_balancer(cluster: Cluster) -> None:
    """X-Forwarded-Proto from the balancer reaches the app: a form post without a Referer
    is refused by the strict CSRF check that applies to https only; with one it passes."""
    lb = cluster.balancer
    with lb.through("wallet1"):
        form = _form(cluster, lb.base)
    sent = {"email": "nobody@acme.test", "password": "wrong-wrong-1", "csrf_token": form.token}
    with lb.through("wallet2"):
        r = send(f"{lb.base}/login", "POST", context=lb.context, form=sent,
                 headers={"Cookie": form.cookie})
        assert r.status == 400 and "Form expired" in r.text, r.text[:300]
        r = form.post(cluster, "nobody@acme.test", "wrong-wrong-1")
        assert r.status == 401, r.text[:300]  # past the CSRF check, to the password
    assert r.headers.get("strict-transport-security", "").startswith("max-age=")


def _field(answer: Answer, name: str) -> int:
    """A parameter of the RateLimit field (`"nonces-anonymous";r=3;t=41`)."""
    found = re.search(rf";{name}=(\d+)", answer.headers.get("ratelimit", ""))
    assert found, answer.headers
    return int(found.group(1))


def test_a_rate_limit_counts_across_both_instances(cluster: Cluster) -> None:
    """Anonymous nonce requests from one address: one quota for both instances, not one each."""
    lb = cluster.balancer
    with lb.through("wallet1"):
        first = cluster.call("POST", "/api/v1/orgs/acme/nonces")
    assert first.status == 201, first.text
    if _field(first, "t") < 8:  # the minute ends too soon: start in the next window
        time.sleep(_field(first, "t") + 0.5)
        with lb.through("wallet1"):
            first = cluster.call("POST", "/api/v1/orgs/acme/nonces")
        assert first.status == 201, first.text
    assert first.headers["ratelimit-policy"] == f'"nonces-anonymous";q={NONCE_QUOTA};w=60'
    left = [_field(first, "r")]
    assert left == [NONCE_QUOTA - 1]
    for i in range(NONCE_QUOTA - 1):  # the rest of the quota, through each in turn
        with lb.through(SERVERS[(i + 1) % 2]):
            r = cluster.call("POST", "/api/v1/orgs/acme/nonces")
        assert r.status == 201, (i, r.text)
        left.append(_field(r, "r"))
    assert left == list(range(NONCE_QUOTA - 1, -1, -1))  # one count, whoever served
    for name in SERVERS:  # spent, through either
        with lb.through(name):
            refused = cluster.call("POST", "/api/v1/orgs/acme/nonces")
        assert refused.status == 429 and refused.code == "rate_limited", (name, refused.text)
        assert 0 < int(refused.headers["retry-after"]) <= 60
        assert _field(refused, "r") == 0
    # An engineer's own allowance is another count: ada's token still gets hers.
    with lb.through("wallet2"):
        mine = cluster.call("POST", "/api/v1/orgs/globex/nonces", token=cluster.ada_globex)
    assert mine.status == 201 and mine.json()["bound"], mine.text


def _usage(tokens: int = 1000) -> dict[str, Any]:
    return {"person": ADA, "model": MODEL, "input_tokens": tokens, "output_tokens": 100}


def test_an_idempotency_key_replayed_on_the_other_instance_gets_the_stored_answer(
        cluster: Cluster) -> None:
    from wallet.models import UsageRecord

    lb = cluster.balancer
    with lb.through("wallet1"):
        first = cluster.call("POST", "/api/v1/orgs/acme/usage", token=cluster.service_token,
                             key="usage-replay-1", body=_usage())
    assert first.status == 201, first.text
    assert "idempotent-replayed" not in first.headers
    with lb.through("wallet2"):
        again = cluster.call("POST", "/api/v1/orgs/acme/usage", token=cluster.service_token,
                             key="usage-replay-1", body=_usage())
        other = cluster.call("POST", "/api/v1/orgs/acme/usage", token=cluster.service_token,
                             key="usage-replay-1", body=_usage(2000))
    assert again.status == 201 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert other.status == 422 and other.code == "idempotency_conflict", other.text
    assert _count(cluster.app, sa.select(sa.func.count()).select_from(UsageRecord).where(
        UsageRecord.idempotency_key == "usage-replay-1")) == 1


@dataclass
class _Outcome:
    key: str
    attempts: list[int | str] = field(default_factory=list)  # status, or the error's name
    answer: dict[str, Any] | None = None  # the 2xx answer
    answered_at: float = 0.0
    replayed: bool = False  # the stored answer: an earlier attempt had done the work


def test_killing_an_instance_mid_load_loses_no_answered_request(cluster: Cluster) -> None:
    from wallet import db
    from wallet.models import UsageRecord

    lb, victim = cluster.balancer, cluster.instances["wallet1"]
    before = fs.wallet_balance(cluster.app, "acme")
    stop, outcomes, lock = threading.Event(), [], threading.Lock()

    def client(number: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            outcome = _Outcome(f"load-{number}-{i}")
            with lock:
                outcomes.append(outcome)
            give_up = time.monotonic() + 25
            while time.monotonic() < give_up:  # a client retries with the same key
                try:
                    r = cluster.call("POST", "/api/v1/orgs/acme/usage",
                                     token=cluster.service_token, key=outcome.key,
                                     body=_usage(), timeout=10)
                except (OSError, http.client.HTTPException) as err:
                    # No answer, or half of one (IncompleteRead: the instance died while
                    # its answer came through the balancer): the same key again.
                    outcome.attempts.append(type(err).__name__)
                    time.sleep(0.1)
                    continue
                outcome.attempts.append(r.status)
                if 200 <= r.status < 300:
                    outcome.answer, outcome.answered_at = r.json(), time.monotonic()
                    outcome.replayed = r.headers.get("idempotent-replayed") == "true"
                    break
                # 409: the key's first attempt died with its instance after committing its
                # work but before storing the answer; the lease (5 s here) then runs out
                # and the retry answers from what that attempt recorded.
                assert r.status in (502, 503, 504) or r.code == "idempotency_in_flight", (
                    r.status, r.text[:300])
                time.sleep(0.1)

    workers = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(6)]
    for w in workers:
        w.start()

    def answered() -> int:
        with lock:
            return sum(o.answer is not None for o in outcomes)

    deadline = time.monotonic() + 20
    while answered() < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert int(lb.servers()["wallet1"]["stot"]) > 0 and int(lb.servers()["wallet2"]["stot"]) > 0
    killed_at = time.monotonic()
    victim.kill()
    at_kill = answered()
    while (answered() < at_kill + 60 or time.monotonic() < killed_at + 3) \
            and time.monotonic() < deadline + 10:
        time.sleep(0.02)
    stop.set()
    for w in workers:
        w.join(30)
    assert not any(w.is_alive() for w in workers)
    lb.wait_status("wallet1", "DOWN", time.monotonic() + 10)

    failed = [o for o in outcomes if o.answer is None]
    retried = [o for o in outcomes if len(o.attempts) > 1]
    summary = (f"{len(outcomes)} keys, {answered()} answered 2xx ({answered() - at_kill} after"
               f" the kill), {len(retried)} retried "
               f"({sorted({str(a) for o in retried for a in o.attempts})}), of which"
               f" {sum(o.replayed for o in retried)} answered from the stored answer and"
               f" {sum('409' in map(str, o.attempts) for o in retried)} waited out a lease")
    print(summary)  # shown with -s
    assert not failed, f"never answered: {[(o.key, o.attempts) for o in failed]}; {summary}"
    assert any(o.answered_at > killed_at for o in outcomes), summary

    # Every answered request is in the database exactly as answered, once; nothing else is.
    keys = {o.key: o.answer for o in outcomes}
    with cluster.app.app_context():
        s = db.session()
        rows = s.execute(sa.select(UsageRecord.idempotency_key, UsageRecord.id,
                                   UsageRecord.cost, UsageRecord.transfer_id)
                         .where(UsageRecord.idempotency_key.like("load-%"))).all()
        s.rollback()
    stored = {row.idempotency_key: row for row in rows}
    assert len(stored) == len(rows) == len(keys), summary
    for key, answer in keys.items():
        assert answer is not None
        row = stored[key]
        assert (row.id, row.transfer_id) == (answer["id"], answer["transfer"]), key
        assert answer["cost"]["currency"] == "USD"
        assert Decimal(answer["cost"]["value"]) * 1_000_000 == row.cost == 4500  # 0.0045
    spent = sum(row.cost for row in rows)
    assert before - fs.wallet_balance(cluster.app, "acme") == spent
    support.assert_ledger_sound(cluster.app)  # wallet.actions.ledger.check: every invariant

    # The instance comes back: HAProxy's checks take it in again, and it serves.
    victim.start()
    victim.wait_healthy(time.monotonic() + 30)
    lb.wait_status("wallet1", "UP", time.monotonic() + 15)
    with lb.through("wallet1"):
        r = cluster.call("POST", "/api/v1/orgs/acme/usage", token=cluster.service_token,
                         key="load-0-0", body=_usage())
    assert r.status == 201, r.text
