"""What the HTTP benchmarks share (bench/http_verify.py, bench/balancer.py).

Refusing clearly when wrk, HAProxy or PostgreSQL is missing; a scratch PostgreSQL database
created, migrated and dropped; an organisation set up through the CLI as an operator
would, with one real exported note; gunicorn instances started as `make serve-prod` starts
them (deploy/gunicorn.conf.py) and HAProxy running deploy/haproxy.cfg; wrk runs with
bench/wrk/requests.lua; CPU time per process group from /proc; and cleanup of every
process and database this script started, on failure, Ctrl-C or SIGTERM too.

Not a benchmark: a module of helpers (its name starts with an underscore).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
WRK_SCRIPT = BENCH / "wrk" / "requests.lua"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PASSWORD = "bench pass phrase 123"  # noqa: S105 (a scratch database, dropped at the end)
ORG, ENGINEER = "acme", "eng@bench.test"


# -- refusing, and cleaning up ----------------------------------------------------------


def refuse(message: str) -> None:
    """One line on stderr and exit 2: something this benchmark needs is missing."""
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)
    raise SystemExit(2)


def need_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        refuse("wrk is not installed: `sudo apt-get install -y wrk` (Debian, Ubuntu)")
    return str(found)


def need_haproxy() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None)
    if not found:
        refuse("HAProxy is not installed: `sudo apt-get install -y haproxy` (Debian, Ubuntu)")
    return str(found)


def need_gunicorn() -> str:
    found = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    if not found:
        refuse("gunicorn is not installed next to this Python: `make venv`")
    return str(found)


def postgres_url(given: str | None) -> str:
    """The server URL to create scratch databases from: --url, else
    WALLET_BENCH_POSTGRES_URL, else WALLET_TEST_POSTGRES_URL, else the default."""
    from wallet.config import normalise_database_url

    url = (given or os.environ.get("WALLET_BENCH_POSTGRES_URL")
           or os.environ.get("WALLET_TEST_POSTGRES_URL") or DEFAULT_URL)
    try:
        backend = make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        refuse("--url is not a database URL (postgresql+psycopg://user@host:5432/dbname)")
    if backend != "postgresql":
        refuse(f"--url names {backend}, not PostgreSQL (gunicorn instances share PostgreSQL)")
    return normalise_database_url(url)


def admin_engine(url: str) -> sa.Engine:
    """An autocommit engine for CREATE/DROP DATABASE; refuses when nothing answers."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool,
                              connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as err:
        shown = make_url(url).render_as_string(hide_password=True)
        refuse(f"no PostgreSQL answering at {shown} ({type(err.orig or err).__name__});"
               " start one or pass --url")
    return engine


def terminate_as_interrupt() -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does: through every `finally`. (SIGINT
    too, even when started in the background by a shell that ignores it for its jobs.)"""
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def stop_group(process: subprocess.Popen[bytes] | None, *, grace: float = 20) -> None:
    """Stop a child started in its own session: SIGTERM to it, then SIGKILL to its
    process group (its id is the child's pid: only what we started)."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group (workers)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


# -- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(command: list[str], pattern: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else "?"


def machine(engine: sa.Engine, tools: dict[str, str]) -> dict[str, Any]:
    """CPU model, CPU count, load average (before the run), versions."""
    with engine.connect() as c:
        pg = str(c.execute(sa.text("SHOW server_version")).scalar_one())
    info = {
        "cpu": cpu_model(), "nproc": len(os.sched_getaffinity(0)), "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "platform": platform.platform(),
        "postgresql": pg, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if "wrk" in tools:
        info["wrk"] = _version([tools["wrk"], "-v"], r"wrk (\S+)")
    if "haproxy" in tools:
        info["haproxy"] = _version([tools["haproxy"], "-v"], r"version (\S+)")
    info["gunicorn"] = _version([need_gunicorn(), "--version"], r"\(version (\S+)\)")
    return info


def print_machine(info: dict[str, Any]) -> None:
    print(f"machine: {info['cpu']}, nproc {info['nproc']}, load average before start"
          f" {' '.join(map(str, info['loadavg']))}; {info['date']}")
    print(f"python {info['python']}, PostgreSQL {info['postgresql']}, gunicorn"
          f" {info['gunicorn']}, wrk {info.get('wrk', '-')}"
          + (f", HAProxy {info['haproxy']}" if "haproxy" in info else ""))


# -- a scratch database with one organisation -----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def production_secret() -> str:
    """A secret that production mode accepts (no development words in it)."""
    while True:
        value = secrets.token_urlsafe(48)
        if not any(w in value.lower() for w in
                   ("dev", "change", "secret", "test", "example", "password")):
            return value


@contextlib.contextmanager
def scratch_database(admin: sa.Engine, url: str, prefix: str) -> Iterator[str]:
    """CREATE DATABASE, migrate it, yield its URL; DROP it (WITH FORCE) whatever happens."""
    from wallet import migrations
    from wallet.db import make_engine

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    target = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine = make_engine(target)
        try:
            migrations.upgrade(engine)
        finally:
            engine.dispose()
        yield target
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


RATE_LIMITS = ("database", "redis", "off")


def environment(database_url: str, base_url: str, folder: Path,
                extra: dict[str, str] | None = None, *,
                rate_limits: str = "database") -> dict[str, str]:
    """A production instance's environment: shared database, secrets, keys in the database.

    Rate limits are counted as in production (`rate_limits`: in the database, the default;
    in Redis at 127.0.0.1:6379 under a prefix of this run's; or "off", not counted, to
    see what counting costs), but the verify bucket's anonymous quota is out of reach:
    every wrk connection comes from 127.0.0.1, one address (an office behind NAT).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WALLET_", "GUNICORN_", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"))}
    env.update({
        "WALLET_ENV": "production",
        "WALLET_DATABASE_URL": database_url,
        "WALLET_BASE_URL": base_url,
        "WALLET_SECRET_KEY": production_secret(),
        "WALLET_KEY_PASSPHRASE": production_secret(),
        "WALLET_KEY_STORAGE": "db",
        "WALLET_INSTANCE_PATH": str(folder / "instance"),
        "WALLET_KEYSTORE": str(folder / "keys"),
        "WALLET_ARGON2_TIME_COST": "1",
        "WALLET_ARGON2_MEMORY_KIB": "1024",
        "WALLET_RATE_LIMITS": "verify:anonymous=" + ("0" if rate_limits == "off"
                                                     else "999999999"),
    })
    if rate_limits == "redis":
        env["WALLET_REDIS_URL"] = "redis://127.0.0.1:6379/0"
        env["WALLET_RATE_LIMIT_REDIS_PREFIX"] = f"wallet-bench:{uuid.uuid4().hex[:8]}:"
    env.update(extra or {})
    return env


def wallet_cli(env: dict[str, str], *args: str) -> str:
    wallet = shutil.which("wallet", path=os.path.dirname(sys.executable))
    if not wallet:
        refuse("the wallet console script is not installed next to this Python: `make venv`")
    done = subprocess.run([str(wallet), *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wallet {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def organisation_with_a_note(env: dict[str, str], folder: Path) -> str:
    """acme as an operator sets it up (CLI): funded, a signing key, an engineer with a
    grant; one note exported from her wallet. Returns the note (its compact form)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wallet.core import jose

    password = folder / "password"
    password.write_text(PASSWORD + "\n")
    holder = folder / "holder.jwk.json"
    holder.write_text(json.dumps(jose.public_jwk(Ed25519PrivateKey.generate())))
    wallet_cli(env, "org", "create", ORG, "--name", "Acme AI", "--admin-email",
               "admin@acme.bench", "--password-file", str(password))
    wallet_cli(env, "fund", "--org", ORG, "--amount", "1000000.00", "--idempotency-key",
               "bench-fund")
    wallet_cli(env, "keys", "generate", "--org", ORG)
    wallet_cli(env, "person", "add", "--org", ORG, "--email", ENGINEER, "--password-file",
               str(password))
    wallet_cli(env, "grant", "create", "--org", ORG, "--email", ENGINEER, "--amount", "100.00")
    out = folder / "note.txt"
    wallet_cli(env, "note", "export", "--org", ORG, "--email", ENGINEER, "--amount", "12.50",
               "--holder-jwk", str(holder), "--out", str(out), "--idempotency-key", "bench")
    return out.read_text().strip()


def post_json(url: str, body: bytes, *, context: Any = None,
              timeout: float = 20) -> tuple[int, bytes]:
    """One POST with urllib (the sanity check before the load): status and raw body."""
    req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 (http(s) only)
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# -- gunicorn --------------------------------------------------------------------------------


@dataclass
class Gunicorn:
    """One instance: gunicorn with deploy/gunicorn.conf.py, as `make serve-prod` runs it."""

    name: str
    env: dict[str, str]
    folder: Path
    workers: int
    app: str | None = None  # "module:callable" in bench/, else the config's wallet:create_app()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # Made here, not by the workers: each would make it at once on its first start.
        self.folder.mkdir(parents=True, exist_ok=True)
        Path(self.env["WALLET_INSTANCE_PATH"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        command = [need_gunicorn(), "-c", str(GUNICORN_CONF), "--bind",
                   f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                   # No recycling during a measurement: a worker replaced mid-phase costs an
                   # app build in that phase and takes its CPU time out of /proc.
                   "--max-requests", "0"]
        if self.app:
            command += ["--pythonpath", str(BENCH), self.app]
        with (self.folder / "server.log").open("ab") as log:  # the child keeps its copy
            self.process = subprocess.Popen(command, cwd=self.folder, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_healthy(self, deadline: float) -> None:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as r:  # noqa: S310
                    if r.status == 200 and json.loads(r.read()).get("database") == "ok":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log()}")

    def stop(self) -> None:
        stop_group(self.process)

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def tracebacks(self) -> int:
        try:
            return (self.folder / "server.log").read_text(errors="replace").count("Traceback")
        except OSError:
            return 0


# -- HAProxy ---------------------------------------------------------------------------------


BALANCER_SOURCE = "127.0.0.2"  # HAProxy reaches the instances from here (their balancer)


def certificate(folder: Path) -> Path:
    """A self-signed certificate and key for 127.0.0.1, as one PEM for HAProxy."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    bundle = folder / "balancer.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    bundle.chmod(0o600)
    return bundle


@dataclass
class HAProxy:
    """HAProxy running deploy/haproxy.cfg (its paths and ports swapped), and its runtime API."""

    binary: str
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def admin(self) -> Path:
        return self.folder / "admin.sock"

    def configure(self, pem: Path, servers: dict[str, int]) -> Path:
        text = HAPROXY_CFG.read_text()
        swaps = [
            # Logged to a file as on a real host (there through syslog), one line a request.
            (r"^    log /dev/log local0$", "    log stdout format raw local0"),
            (r"^    (chroot|user|group|daemon)\b.*\n", ""),
            (r"/run/haproxy/admin\.sock", str(self.admin)),
            (r"^    bind :443 ssl crt \S+ alpn \S+$",
             f"    bind 127.0.0.1:{self.port} ssl crt {pem} alpn http/1.1"),
            (r"^    bind :80\n", ""),
        ]
        for name, port in servers.items():
            swaps.append((rf"^    server {name} \S+$",
                          f"    server {name} 127.0.0.1:{port} source {BALANCER_SOURCE}"))
        for pattern, replacement in swaps:
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            if not count:
                raise RuntimeError(f"deploy/haproxy.cfg changed: nothing matches {pattern!r}")
        path = self.folder / "haproxy.cfg"
        path.write_text(text)
        return path

    def start(self, config: Path) -> None:
        checked = subprocess.run([self.binary, "-c", "-f", str(config)], capture_output=True,
                                 text=True, timeout=30, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy -c refused the configuration:\n{checked.stdout}"
                               f"{checked.stderr}")
        with (self.folder / "haproxy.log").open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-f", str(config)], cwd=self.folder,
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

    def servers(self, backend: str = "wallet") -> dict[str, dict[str, str]]:
        """`show stat` rows of the backend's servers: name -> columns (status, stot, ...)."""
        lines = self.command("show stat").splitlines()
        rows = csv.DictReader([lines[0].lstrip("# ")] + [x for x in lines[1:] if x])
        return {row["svname"]: row for row in rows
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_status(self, name: str, wanted: str, deadline: float) -> None:
        status = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"HAProxy exited:\n{self.log()}")
            try:
                status = self.servers()[name]["status"]
            except (OSError, KeyError, IndexError):
                status = "no answer"
            if status == wanted:
                return
            time.sleep(0.1)
        raise RuntimeError(f"HAProxy: {name} is {status!r}, not {wanted}:\n{self.log()}")

    def stop(self) -> None:
        stop_group(self.process, grace=10)

    def log(self) -> str:
        try:
            return (self.folder / "haproxy.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""


# -- wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One request of a wrk run: what bench/wrk/requests.lua sends and how it recognises
    a good answer (`marker`: a string every good answer holds and no other answer does)."""

    name: str
    method: str
    path: str
    body: Path | None
    marker: str


@dataclass
class WrkRun:
    requests: int
    seconds: float
    ok: dict[str, int]
    not_2xx: int
    unmarked: int
    errors: dict[str, int]
    latency_ms: dict[str, float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bad(self) -> int:
        """Answers that were not good: not 2xx, no marker, or a socket error/timeout."""
        return self.not_2xx + self.unmarked + sum(self.errors.values())


def write_specs(folder: Path, name: str, specs: list[Spec]) -> Path:
    path = folder / f"{name}.tsv"
    for s in specs:
        if any(c in f"{s.name}{s.method}{s.path}{s.marker}" for c in "\t\n"):
            raise ValueError(f"a tab or newline in the spec {s.name!r}")
    path.write_text("".join(f"{s.name}\t{s.method}\t{s.path}\t{s.body or '-'}\t{s.marker}\n"
                            for s in specs))
    return path


class Wrk:
    """Runs wrk with bench/wrk/requests.lua; the run in progress is stopped on cleanup."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder = binary, folder
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, url: str, specs: Path, *, seconds: float, connections: int,
            threads: int) -> WrkRun:
        out = self.folder / "wrk.out"
        with out.open("wb") as sink:
            self.process = subprocess.Popen(
                [self.binary, "-t", str(min(threads, connections)), "-c", str(connections),
                 "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(WRK_SCRIPT),
                 url, "--", str(specs)],
                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self.process.wait(seconds + 60)
            finally:
                self.stop()
        text = out.read_text(errors="replace")
        found = re.search(r"^WRKJSON (\{.*\})$", text, flags=re.MULTILINE)
        if self.process.returncode != 0 or not found:
            raise RuntimeError(f"wrk failed (exit {self.process.returncode}):\n{text[-2000:]}")
        data = json.loads(found.group(1))
        return WrkRun(
            requests=data["requests"], seconds=data["duration_us"] / 1e6, ok=data["ok"],
            not_2xx=data["not_2xx"], unmarked=data["unmarked"], errors=data["errors"],
            latency_ms={k: v / 1000 for k, v in data["latency_us"].items()})

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process, grace=5)


# -- CPU time per process group, from /proc -------------------------------------------------


def processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, session id, CPU seconds used so far: user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        found[int(entry.name)] = (comm, int(fields[3]),
                                  (int(fields[11]) + int(fields[12])) / tick)
    return found


def _postgres_database(pid: int) -> str | None:
    """The database a PostgreSQL backend serves, from its process title
    ("postgres: 15/main: user dbname 127.0.0.1(port) state"); None for the server's own
    processes (checkpointer, WAL writer, ...)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return None
    parts = title.split()
    return parts[3] if len(parts) > 4 and parts[0] == "postgres:" else None


def cpu_groups(sessions: dict[str, int], database: str | None = None) -> dict[str, float]:
    """CPU seconds so far of every live process, grouped: each name of `sessions` (a
    session id we started: an instance, HAProxy), "postgres" (the backends serving
    `database`, ours), "postgres-server" (its shared processes: WAL writer, checkpointer,
    ...; and other databases' backends when `database` is None), "bench" (this script)
    and "other" (the rest of the machine: other people's work, their databases too)."""
    totals = dict.fromkeys([*sessions, "postgres", "postgres-server", "bench", "other"], 0.0)
    by_session = {sid: name for name, sid in sessions.items()}
    me = os.getpid()
    for pid, (comm, session, used) in processes().items():
        if pid == me:
            totals["bench"] += used
        elif session in by_session:
            totals[by_session[session]] += used
        elif comm.startswith("postgres"):
            served = _postgres_database(pid)
            if served is None or database is None:
                totals["postgres-server"] += used
            elif served == database:
                totals["postgres"] += used
            else:
                totals["other"] += used
        else:
            totals["other"] += used
    return totals


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass
class Meter:
    """CPU seconds per group and machine ticks accumulated over the phases of one kind."""

    cpu: dict[str, float] = field(default_factory=dict)
    busy: int = 0
    total: int = 0
    seconds: float = 0.0
    workers: dict[int, float] = field(default_factory=dict)  # gunicorn worker pid -> CPU s

    @contextlib.contextmanager
    def measure(self, sessions: dict[str, int], database: str | None = None,
                masters: tuple[subprocess.Popen[bytes] | None, ...] = ()) -> Iterator[None]:
        """Count what runs inside the block; `masters`: gunicorn masters whose workers'
        CPU is also kept one by one. wrk is counted apart: it is started and reaped
        inside, so its time is in this process's children's usage, not in /proc."""
        def workers() -> dict[int, float]:
            return {pid: used for m in masters for pid, used in worker_cpu(m).items()}

        cpu0, ticks0, kids0, w0 = (cpu_groups(sessions, database), machine_ticks(),
                                   _children(), workers())
        started = time.monotonic()
        yield
        self.seconds += time.monotonic() - started
        cpu1, ticks1, kids1, w1 = (cpu_groups(sessions, database), machine_ticks(),
                                   _children(), workers())
        for k, v in cpu1.items():
            # A process that ended mid-phase takes its time with it: never below zero.
            self.cpu[k] = self.cpu.get(k, 0.0) + max(0.0, v - cpu0.get(k, 0.0))
        self.cpu["wrk"] = self.cpu.get("wrk", 0.0) + kids1 - kids0
        for pid, used in w1.items():
            self.workers[pid] = self.workers.get(pid, 0.0) + max(0.0, used - w0.get(pid, 0.0))
        self.busy += ticks1[0] - ticks0[0]
        self.total += ticks1[1] - ticks0[1]

    def cpus_used(self, groups: tuple[str, ...]) -> float:
        """CPU seconds per second of wall time that `groups` used together."""
        return sum(self.cpu.get(g, 0.0) for g in groups) / self.seconds if self.seconds else 0.0

    def worker_load(self) -> list[float]:
        """Each worker's share of one CPU over the phases (busiest first)."""
        if not self.seconds:
            return []
        return sorted((round(v / self.seconds, 2) for v in self.workers.values()), reverse=True)

    @property
    def busy_share(self) -> float:
        return self.busy / self.total if self.total else 0.0

    def per_request_ms(self, count: int) -> dict[str, float]:
        return {k: round(v * 1000 / max(count, 1), 3) for k, v in self.cpu.items()}


def _children() -> float:
    """CPU seconds of this process's reaped children (wrk, once it has ended)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def session_of(process: subprocess.Popen[bytes] | None) -> int:
    assert process is not None
    return os.getsid(process.pid)


def worker_cpu(process: subprocess.Popen[bytes] | None) -> dict[int, float]:
    """CPU seconds so far of each gunicorn worker (the children of the master)."""
    assert process is not None
    master = process.pid
    found = {}
    for pid, (_comm, _session, used) in processes().items():
        try:
            ppid = int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]).split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master:
            found[pid] = used
    return found


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- py-spy (optional, for measurement only: `.venv/bin/pip install py-spy`) ---------------


def py_spy() -> str | None:
    """py-spy next to this Python or on PATH; None when it is not installed."""
    found = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which(
        "py-spy")
    return str(found) if found else None


def record(binary: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` for `seconds`: samples of the threads holding the GIL (what
    the worker computes, not what it waits for), as collapsed stacks (`-f raw`)."""
    return subprocess.Popen(
        [binary, "record", "--gil", "--nonblocking", "-r", "100", "-d", str(max(1, round(seconds))),
         "-f", "raw", "-o", str(out), "--pid", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


# Where a sample is, by its frames (the first that matches, innermost first, wins).
_AREAS = (
    ("the database client (SQLAlchemy, psycopg)", ("sqlalchemy/", "psycopg/", "sqlmodel/")),
    ("signatures (cryptography)", ("wallet/core/jose.py",)),
    ("the note's checks (wallet.core)", ("wallet/core/",)),
    ("the app (wallet, Flask, Werkzeug)", ("wallet/", "flask/", "werkzeug/", "_app.py")),
    ("gunicorn (HTTP parsing, its event loop, access log)", ("gunicorn/", "logging/")),
)


def profile_summary(raws: list[Path], top: int = 16) -> dict[str, Any]:
    """Shares of GIL samples by area and by wallet function (inclusive), from py-spy's raw
    output (of several workers: summed)."""
    areas: dict[str, int] = {}
    functions: dict[str, int] = {}
    total = 0
    text = "\n".join(raw.read_text(errors="replace") for raw in raws if raw.exists())
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        area = next((name for frame in reversed(frames) for name, marks in _AREAS
                     if any(m in frame for m in marks)), "other (threads, selectors, ...)")
        areas[area] = areas.get(area, 0) + n
        seen = set()
        for frame in frames:
            if "(wallet/" in frame:
                name = frame.split(" (")[0] + " (" + frame.split(" (")[1].rsplit(":", 1)[0] + ")"
                if name not in seen:
                    seen.add(name)
                    functions[name] = functions.get(name, 0) + n
    share = {k: round(v / total, 3) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])}
    ranked = sorted(functions.items(), key=lambda kv: -kv[1])[:top]
    return {"samples": total, "areas": share if total else {},
            "wallet_functions": {k: round(v / total, 3) for k, v in ranked} if total else {}}
