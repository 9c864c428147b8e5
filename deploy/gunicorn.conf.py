"""gunicorn settings for one wallet instance behind a load balancer (docs/deployment.md).

    WALLET_DATABASE_URL=postgresql+psycopg://wallet@db/wallet WALLET_SECRET_KEY=… \\
        WALLET_KEY_PASSPHRASE=… gunicorn -c deploy/gunicorn.conf.py --bind 127.0.0.1:8001

`make serve-prod PORT=8001` runs exactly that. Anything here can be overridden on the
command line or in GUNICORN_CMD_ARGS (gunicorn reads this file first, then those); the
number of workers also through gunicorn's own WEB_CONCURRENCY.

What it assumes: PostgreSQL and the two secrets in the environment (refused otherwise,
before anything starts), and one load balancer in front (HAProxy, deploy/haproxy.cfg) at
the addresses in FORWARDED_ALLOW_IPS (gunicorn's variable; default 127.0.0.1 and ::1, a
balancer on the same host). Only the balancer may speak for the client: `X-Forwarded-*`
and `Forwarded` headers from any other peer are dropped before the app sees them
(`pre_request` below), so the app's one-hop ProxyFix (WALLET_TRUST_PROXY_HOPS, set to 1
here unless given) is never fed a forged client address or scheme by someone who reaches
an instance directly.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from sqlalchemy.engine import make_url


def _refuse(message: str) -> None:
    sys.exit(f"deploy/gunicorn.conf.py: {message}")


# -- the database: PostgreSQL, required ------------------------------------------------

_URL = os.environ.get("WALLET_DATABASE_URL", "").strip()
if not _URL:
    _refuse("WALLET_DATABASE_URL is not set. Several instances share one PostgreSQL"
            " database: set WALLET_DATABASE_URL=postgresql+psycopg://user@host/dbname"
            " (the embedded SQLite default is for `make run` on one machine).")
try:
    _SHOWN = make_url(_URL).render_as_string(hide_password=True)
    _BACKEND = make_url(_URL).get_backend_name()
except Exception:  # an unparsable URL: say so without echoing it (it may hold a password)
    _refuse("WALLET_DATABASE_URL is not a database URL"
            " (postgresql+psycopg://user@host/dbname)")
if _BACKEND != "postgresql":
    _refuse(f"WALLET_DATABASE_URL is {_BACKEND}, not PostgreSQL ({_SHOWN}). Instances"
            " behind a balancer share one PostgreSQL database; SQLite is for `make run`.")

# The same secrets on every instance, from the environment (or the secret manager that
# fills it). Unset, each instance would generate its own into its instance folder, and
# the nonces, CSRF tokens and encrypted keys of one would mean nothing to the others.
_MISSING = [name for name in ("WALLET_SECRET_KEY", "WALLET_KEY_PASSPHRASE")
            if not os.environ.get(name, "").strip()]
if _MISSING:
    _refuse(f"{' and '.join(_MISSING)} not set. Every instance needs the same values (each"
            " would otherwise generate its own): python -c \"import secrets;"
            " print(secrets.token_urlsafe(48))\" (docs/operations.md, \"Configuration\")")

# The app behind one balancer reads the client's address and scheme from the last hop
# (wallet/web/guard.py, ProxyFix). Explicitly 0: every client looks like the balancer.
os.environ.setdefault("WALLET_TRUST_PROXY_HOPS", "1")


# -- processes and threads ---------------------------------------------------------------

def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (cgroups, taskset)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


wsgi_app = "wallet:create_app()"
proc_name = "wallet"
worker_class = "gthread"
# One process per core for the CPU-bound work (argon2, signatures, JSON); threads overlap
# what waits (PostgreSQL round trips, peers). Several instances on one host: divide
# (WEB_CONCURRENCY=cores/instances). Threads stay above WALLET_PEER_MAX_CONCURRENT (3),
# so a stalled peer can never hold every thread; each worker's pool (10 + 20 overflow,
# wallet/store/_dialect.py) covers them. PostgreSQL's max_connections must cover
# instances x workers x threads (+ workers, CLI and migrations): docs/deployment.md.
workers = int(os.environ.get("WEB_CONCURRENCY") or max(2, _cpus()))
threads = 4
preload_app = False  # each worker builds its own app and connection pool after the fork
# Recycle a worker now and then (graceful: it finishes its requests first), staggered.
max_requests = 20_000
max_requests_jitter = 2_000

# -- timeouts ------------------------------------------------------------------------------

# gthread: a worker whose main loop is silent this long is killed and replaced (a request
# may run longer on its thread; the balancer's `timeout server` bounds what a client waits).
timeout = 30
# After SIGTERM: stop accepting, let requests in flight finish for up to this long. Drain
# the instance at the balancer first (docs/deployment.md, "Draining"), then stop it.
graceful_timeout = 30
# Idle keep-alive connections from the balancer stay open longer than the balancer keeps
# them (HAProxy closes idle server connections within seconds, `pool-purge-delay`), so it
# is always the balancer that closes one and never reuses a connection we are closing.
keepalive = 75
# The workers' heartbeat files on tmpfs, not a disk that may stall (gunicorn's advice).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# gunicorn >= 25.1 opens a control socket (`gunicornc`) at one path per user: a second
# instance on the host takes it over, and stopping either removes it. Off; signals and the
# balancer's runtime API are the interface (docs/deployment.md). Ignored by older gunicorn.
control_socket_disable = True

# -- the balancer, and only the balancer, speaks for the client ---------------------------

forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# The one scheme header HAProxy sets (deploy/haproxy.cfg); gunicorn's default also believes
# X-Forwarded-Ssl and X-Forwarded-Protocol, which the balancer does not set.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
forwarder_headers = ""  # no SCRIPT_NAME / PATH_INFO / REMOTE_USER from anyone
_FORWARDING = ("X-FORWARDED-", "FORWARDED", "X-REAL-IP", "X-CLIENT-IP", "CLIENT-IP",
               "TRUE-CLIENT-IP", "CF-CONNECTING-IP", "X-CLUSTER-CLIENT-IP")


def _balancer_networks(cfg: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(a.strip(), strict=False)
            for a in cfg.forwarded_allow_ips if a.strip() and a.strip() != "*"]


def _from_balancer(cfg: Any, peer: Any) -> bool:
    if "*" in cfg.forwarded_allow_ips or not isinstance(peer, tuple):
        return True  # "*", or a UNIX socket: whoever can connect is the balancer
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return any(address in net or (mapped is not None and mapped in net)
               for net in _balancer_networks(cfg))


def pre_request(worker: Any, req: Any) -> None:
    """Drop forwarding headers that did not come from the balancer."""
    if _from_balancer(worker.cfg, getattr(req, "peer_addr", None)):
        return
    kept = [(name, value) for name, value in req.headers
            if not name.upper().startswith(_FORWARDING)]
    if len(kept) != len(req.headers):
        worker.log.debug("dropped forwarding headers from %s, not a balancer",
                         req.peer_addr[0])
        req.headers = kept


# -- logs: no secrets, and the client as the balancer saw it -------------------------------

logger_class = "wallet.server.RedactingLogger"  # paths, queries, referers, credential headers
accesslog = "-"
errorlog = "-"
loglevel = "info"
# The client (X-Forwarded-For, last hop), the balancer's request id (X-Request-ID, also in
# HAProxy's log), the request line with query values and link tokens redacted, status,
# bytes, milliseconds. No cookie, Authorization, Idempotency-Key or token header, ever.
access_log_format = ('%({x-forwarded-for}i)s via %(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms'
                     ' "%(f)s" "%(a)s" id=%({x-request-id}i)s')


def on_starting(server: Any) -> None:
    """Before any worker: refuse a database with no schema (run `wallet db upgrade` once,
    not from every instance), and say what looks wrong. Plain SQLAlchemy: the app is
    built in the workers, never in the master."""
    import sqlalchemy as sa

    url = make_url(_URL).set(drivername="postgresql+psycopg")  # the driver the app uses
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)
    try:
        with engine.connect() as connection:
            migrated = sa.inspect(connection).has_table("alembic_version") and bool(
                connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar())
    except sa.exc.SQLAlchemyError as err:  # unreachable now: /healthz answers 503 till then
        server.log.warning("the database %s is not reachable yet: %s", _SHOWN,
                           type(err).__name__)
        migrated = True
    finally:
        engine.dispose()
    if not migrated:
        _refuse(f"the database {_SHOWN} has no schema: run `wallet db upgrade` once")
    hops = os.environ.get("WALLET_TRUST_PROXY_HOPS", "")
    if hops.strip() == "0":
        server.log.warning("WALLET_TRUST_PROXY_HOPS=0 behind a balancer: every client has"
                           " the balancer's address (one sign-in throttle for everyone)")
    if os.environ.get("WALLET_KEY_STORAGE", "file").strip() != "db":
        server.log.warning("WALLET_KEY_STORAGE is not db: signing keys are files in"
                           " WALLET_KEYSTORE, so instances on other hosts cannot sign with a"
                           " key made here (set WALLET_KEY_STORAGE=db, or share the folder)")
    if "*" in server.cfg.forwarded_allow_ips:
        server.log.warning("FORWARDED_ALLOW_IPS=*: anyone who reaches this port can claim"
                           " any client address; allow only the balancer's")
    server.log.info("wallet on %s, %d workers x %d threads, balancer %s",
                    _SHOWN, server.cfg.workers, server.cfg.threads,
                    ",".join(server.cfg.forwarded_allow_ips))


def post_worker_init(worker: Any) -> None:
    """In the first worker: warn when the database is not at this code's newest migration."""
    if worker.age != 1:
        return
    from wallet import db, migrations

    try:
        with worker.wsgi.app_context():
            engine = db.engine()
            current, head = migrations.current_revision(engine), migrations.head_revision(engine)
    except Exception as err:  # the database is down: /healthz says so
        worker.log.warning("cannot read the database's migration: %s", type(err).__name__)
        return
    if current != head:
        worker.log.warning("the database is at migration %s, this code's newest is %s: run"
                           " `wallet db upgrade` (docs/deployment.md, \"Draining, restarts"
                           " and upgrades\")", current, head)
