"""Benchmark: the latency the wallet's LiteLLM hook adds to each call (issue 13).

Two real LiteLLM proxies run side by side on loopback with the same mocked model
(`mock_response`: no network): one with `callbacks: wallet.integrations.litellm.handler`,
one without. The wallet is the real app under `wallet serve` (gunicorn, its defaults) on a
scratch SQLite database (or PostgreSQL with --url), set up in this script: acme, ada with
plenty of credit, a service token. Calls alternate between the two proxies so both see
the same machine; each call is one non-streamed chat completion with max_tokens. With
the callback, a call is: count the prompt, place the hold (one wallet request) before the
model; the capture (a second request) runs after the answer, in LiteLLM's logging task.

Phases: 1 client (the added latency per call, p50 of each and the difference), then
--clients clients at once (p50 and p99). Goal: added p50 <= 8 ms. A call that does not
answer 200 is counted, left out of the latencies and reported at the end (exit 1): on a
loaded machine a 16-client burst can outlast the adapter's 3 s deadline
(--wallet-timeout raises it).

    .venv/bin/python bench/litellm_hook.py [--calls 400] [--clients 16] [--rounds 2]
        [--url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--litellm PATH]
        [--wallet fake] [--wallet-timeout SECONDS]

Needs LiteLLM's proxy (`.venv-litellm/bin/litellm`, see tests/integrations/support.py).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tests.integrations.gateway import WALLET_CALLBACK, Proxy, free_port  # noqa: E402

KEY = "sk-bench-ada"
ADA = "ada@example.test"
BODY = {"model": "gpt-4o-mini", "max_tokens": 20,
        "messages": [{"role": "user", "content": "Please say hello to the wallet, briefly."}]}


def wallet_env(tmp: Path, url: str | None) -> dict[str, str]:
    return {
        "WALLET_DATABASE_URL": url or f"sqlite:///{tmp / 'wallet.db'}",
        "WALLET_INSTANCE_PATH": str(tmp / "instance"), "WALLET_KEYSTORE": str(tmp / "keys"),
        "WALLET_BASE_URL": "http://127.0.0.1", "WALLET_SECRET_KEY": "bench-" + "x" * 40,
        "WALLET_KEY_PASSPHRASE": "bench-passphrase",
        "WALLET_ARGON2_TIME_COST": "1", "WALLET_ARGON2_MEMORY_KIB": "1024",
    }


def scratch_postgres(url: str) -> tuple[str, Any]:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = "bench_litellm_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin.url).set(database=name).render_as_string(hide_password=False), drop


def set_up_wallet(env: dict[str, str]) -> str:
    """Migrate, create acme and ada with credit; return a service token."""
    from wallet import create_app, db, migrations
    from wallet.actions import grants, ledger, orgs
    from wallet.actions._base import Actor
    from wallet.db import make_engine

    engine = make_engine(env["WALLET_DATABASE_URL"])
    migrations.upgrade(engine)
    engine.dispose()
    app = create_app(dict(env))
    cli = Actor.cli()
    with app.app_context():
        s = db.session()
        secret = uuid.uuid4().hex
        orgs.create_org(s, slug="acme", name="Acme AI", admin_email="admin@acme.test",
                        actor=cli, admin_password=secret)
        orgs.add_person(s, slug="acme", email=ADA, password=secret, actor=cli)
        ledger.fund(s, slug="acme", amount="100000.00", idempotency_key="bench", actor=cli)
        grants.create_grant(s, slug="acme", email=ADA, amount="50000.00", actor=cli)
        token, _ = orgs.create_token(s, slug="acme", email=None, actor=cli)
    app.extensions["wallet.engine"].dispose()
    return str(token)


FAILED: dict[str, list[str]] = {}  # proxy -> the first answers of calls that failed


def call(proxy: Proxy, name: str) -> float | None:
    """One call's latency in ms; None (and noted in FAILED) when it did not answer 200."""
    started = time.perf_counter()
    status, _, raw = proxy.request("POST", "/v1/chat/completions", BODY, key=KEY)
    took = time.perf_counter() - started
    if status != 200:
        FAILED.setdefault(name, []).append(f"{status}: {raw[:200]!r}")
        return None
    return took * 1000


def measure(proxies: dict[str, Proxy], calls: int, clients: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in proxies}
    if clients == 1:
        for i in range(calls):
            for name in (list(proxies) if i % 2 == 0 else list(reversed(proxies))):
                took = call(proxies[name], name)
                if took is not None:
                    times[name].append(took)
        return times
    for name in list(proxies) * 2:  # alternate whole bursts, twice each
        proxy = proxies[name]
        with ThreadPoolExecutor(clients) as pool:
            times[name] += [t for t in pool.map(lambda _, p=proxy, n=name: call(p, n),
                                                range(calls // 2)) if t is not None]
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--url", default=os.environ.get("WALLET_BENCH_POSTGRES_URL"))
    parser.add_argument("--wallet", choices=("real", "fake"), default="real",
                        help="fake: tests/integrations/fake_wallet.py in its own process, to"
                             " separate the adapter's cost from the wallet server's")
    parser.add_argument("--litellm", default=os.environ.get("WALLET_TEST_LITELLM")
                        or str(ROOT / ".venv-litellm/bin/litellm"))
    parser.add_argument("--wallet-timeout", type=float, default=None,
                        help="the adapter's WALLET_TIMEOUT in seconds (default: its own, 3):"
                             " raise it on a loaded machine, where a 16-client burst can"
                             " outlast 3 s and its calls are refused")
    args = parser.parse_args()
    if not shutil.which(args.litellm):
        print(f"no LiteLLM proxy at {args.litellm} (see tests/integrations/support.py)",
              file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    drop = None
    url = args.url if args.wallet == "real" else None
    port = free_port()
    if args.wallet == "fake":
        from tests.integrations.fake_wallet import TOKEN

        token = TOKEN
        command = [sys.executable, "-m", "tests.integrations.fake_wallet", str(port),
                   f"{ADA}={10**12}"]
        env: dict[str, str] = {"PYTHONPATH": str(ROOT)}
    else:
        if url:
            url, drop = scratch_postgres(url)
        env = wallet_env(tmp, url)
        token = set_up_wallet(env)
        wallet_bin = shutil.which("wallet", path=os.path.dirname(sys.executable)) or "wallet"
        command = [wallet_bin, "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=(tmp / "wallet.log").open("wb"), start_new_session=True)
    proxies: dict[str, Proxy] = {}
    try:
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                time.sleep(0.1)
        wallet = {"WALLET_URL": f"http://127.0.0.1:{port}", "WALLET_ORG": "acme",
                  "WALLET_SERVICE_TOKEN": token}
        if args.wallet_timeout is not None:
            wallet["WALLET_TIMEOUT"] = str(args.wallet_timeout)
        proxies["without"] = Proxy.start(args.litellm, tmp / "without", callbacks=[],
                                         keys={KEY: ADA})
        proxies["with"] = Proxy.start(args.litellm, tmp / "with", callbacks=[WALLET_CALLBACK],
                                      keys={KEY: ADA}, env=wallet)
        measure(proxies, 40, 1)  # warm up both (connections, tokenizer, caches)
        sequential: dict[str, list[float]] = {n: [] for n in proxies}
        burst: dict[str, list[float]] = {n: [] for n in proxies}
        for _ in range(args.rounds):
            for name, values in measure(proxies, args.calls // args.rounds, 1).items():
                sequential[name] += values
            for name, values in measure(proxies, args.calls // args.rounds,
                                        args.clients).items():
                burst[name] += values
        time.sleep(1)  # let the last captures land
    finally:
        for proxy in proxies.values():
            proxy.stop()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
        if drop is not None:
            drop()

    backend = "fake" if args.wallet == "fake" else "postgresql" if url else "sqlite"
    result: dict[str, Any] = {"wallet": backend,
                              "calls_per_proxy": len(sequential["with"]),
                              "clients": args.clients}
    print(f"{'phase':<22}{'without p50':>12}{'with p50':>10}{'added p50':>11}"
          f"{'without p99':>13}{'with p99':>10}")
    for phase, values in (("1 client", sequential), (f"{args.clients} clients", burst)):
        w50, c50 = statistics.median(values["without"]), statistics.median(values["with"])
        w99, c99 = pct(values["without"], 0.99), pct(values["with"], 0.99)
        print(f"{phase:<22}{w50:>10.2f}ms{c50:>8.2f}ms{c50 - w50:>9.2f}ms"
              f"{w99:>11.2f}ms{c99:>8.2f}ms")
        key = "sequential" if phase == "1 client" else "concurrent"
        result[key] = {"without_p50_ms": round(w50, 2), "with_p50_ms": round(c50, 2),
                       "added_p50_ms": round(c50 - w50, 2), "ratio_p50": round(c50 / w50, 3),
                       "without_p99_ms": round(w99, 2), "with_p99_ms": round(c99, 2)}
    result["goal_added_p50_ms"] = 8
    result["met"] = result["sequential"]["added_p50_ms"] <= 8
    result["failed_calls"] = {name: len(found) for name, found in FAILED.items()}
    for name, found in FAILED.items():
        print(f"{len(found)} calls through the proxy {name!r} did not answer 200;"
              f" the first: {found[0]}")
    print(json.dumps(result))
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
