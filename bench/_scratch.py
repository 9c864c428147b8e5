"""Shared by bench/status_fetch.py and bench/export.py: the machine, scratch PostgreSQL
databases, gunicorn under the production config, and its workers' memory.

Nothing here is a benchmark; `bench/honour.py` holds the instance and load helpers the
benches share, this adds what those two need besides.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from honour import Instance, request, wallet_bin

from wallet import migrations
from wallet.config import normalise_database_url
from wallet.db import make_engine

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parents[1]


def default_url() -> str:
    return (os.environ.get("WALLET_BENCH_POSTGRES_URL")
            or os.environ.get("WALLET_TEST_POSTGRES_URL") or DEFAULT_URL)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were taken on, with the load average before the run starts."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return {"cpu": cpu_model(), "nproc": cpus, "python": platform.python_version(),
            "platform": platform.platform(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def machine_line(info: dict[str, Any]) -> str:
    return (f"machine: {info['cpu']} x{info['nproc']}, python {info['python']},"
            f" load average before start {info['load_before']}, {info['date']}")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the `finally` blocks stop servers and drop
    databases when the bench is killed (SIGINT already raises KeyboardInterrupt)."""
    def handler(_signum: int, _frame: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, handler)


def admin_engine_or_refuse(url: str, bench: str) -> sa.Engine:
    """An AUTOCOMMIT engine on the server at `url`; one stderr line and exit 2 when no
    PostgreSQL answers there (or the URL is not PostgreSQL)."""
    try:
        url = normalise_database_url(url)
        parsed = make_url(url)
    except Exception:
        print(f"{bench}: --url is not a database URL (postgresql+psycopg://user@host/db)",
              file=sys.stderr)
        raise SystemExit(2) from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() != "postgresql":
        print(f"{bench}: needs PostgreSQL, got {shown}", file=sys.stderr)
        raise SystemExit(2)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except Exception as err:  # psycopg missing, server down, refused, bad password
        engine.dispose()
        print(f"{bench}: no PostgreSQL at {shown} ({type(err).__name__}); start one or pass"
              " --url / WALLET_BENCH_POSTGRES_URL", file=sys.stderr)
        raise SystemExit(2) from None
    return engine


@contextlib.contextmanager
def scratch_databases(admin: sa.Engine, prefix: str, count: int) -> Iterator[list[str]]:
    """`count` new, migrated databases on the admin engine's server (their URLs), dropped
    afterwards whatever happened."""
    tag = uuid.uuid4().hex[:8]
    names = [f"{prefix}_{tag}_{i}" for i in range(count)]
    urls = []
    try:
        for name in names:
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            target = admin.url.set(database=name).render_as_string(hide_password=False)
            engine = make_engine(target)
            try:
                migrations.upgrade(engine)
            finally:
                engine.dispose()
            urls.append(target)
        yield urls
    finally:
        with admin.connect() as c:
            for name in names:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (gunicorn's workers of its master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def status_kib(pid: int, field: str = "VmRSS") -> int | None:
    """A `/proc/<pid>/status` memory field in KiB (VmRSS, VmHWM), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class ProdInstance(Instance):
    """An instance under gunicorn with deploy/gunicorn.conf.py, as `make serve-prod` runs
    it (its workers, threads, recycling, access log), on `port`."""

    def config(self) -> dict[str, Any]:
        return {**super().config(), "WALLET_KEY_STORAGE": "db", "WALLET_ENV": "development"}

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = self.env()
        env["WEB_CONCURRENCY"] = str(self.workers)
        args = [str(Path(sys.executable).with_name("gunicorn")), "-c",
                str(ROOT / "deploy" / "gunicorn.conf.py"), "--bind",
                f"127.0.0.1:{self.port}", "--threads", str(self.threads)]
        with (self.folder / "server.log").open("wb") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, cwd=ROOT,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{self.log()}")
            try:
                if request("GET", self.port, "/healthz")[0] == 200 and \
                        len(self.workers_now()) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not become healthy:\n{self.log()}")

    def workers_now(self) -> list[int]:
        assert self.process is not None
        return children(self.process.pid)


__all__ = ["DEFAULT_URL", "Instance", "ProdInstance", "admin_engine_or_refuse", "children",
           "cpu_model", "default_url", "machine", "machine_line", "scratch_databases",
           "status_kib", "stop_on_sigterm", "wallet_bin"]
