"""Benchmark: HTTP verify under gunicorn on PostgreSQL, against a plain JSON POST (issue 14).

One gunicorn instance as `make serve-prod` runs it (deploy/gunicorn.conf.py: gthread, 2
workers of 4 threads on two cores, production settings, access log on) serves a scratch
PostgreSQL database (created, migrated and dropped by this script). Organisation acme is
set up with the CLI, as an operator would, and exports one real note. Then wrk (32
connections, keep-alive) sends, for the same duration each and in alternating phases:

  verify  POST /api/v1/orgs/acme/verify with {"note": <that note>}: an anonymous caller
          (counted in the verify rate limit per address, as in production; its quota is
          lifted, every connection being 127.0.0.1), the organisation, every check of the
          note (signature, window, amount, our own records for its status), the report
  plain   POST /api/v1/bench/echo with the same body: a route that only this benchmark
          adds (bench/_app.py), on the same app, so the same middleware, input screen,
          JSON parse, sessions-off API path, headers and access log apply

wrk's Lua script (bench/wrk/requests.lua) counts every answer that is not 2xx, and every
2xx verify answer that does not say "valid":true; one urllib request checks beforehand
that the JSON says valid. The phases alternate (verify, plain, then plain, verify, ...)
so a machine that speeds up or slows down affects both sides alike.

Reported: requests/s of each, the ratio verify/plain, latency p50/p99 from wrk (median
over the rounds), CPU time per request of gunicorn, PostgreSQL, wrk and the rest of the
machine, how busy the CPUs were, and the machine (CPU, nproc, load average before start).
Goal: verify >= 0.6 x plain.

    .venv/bin/python bench/http_verify.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--seconds 10] [--rounds 3] [--connections 32] [--workers 2] [--wrk-threads 2]
        [--rate-limits database|redis|off] [--py-spy DIR]

--seconds is each phase's length in each round. The URL (or WALLET_BENCH_POSTGRES_URL,
else WALLET_TEST_POSTGRES_URL) names a server and a database to connect to for CREATE
DATABASE. Needs wrk and PostgreSQL (refused with exit 2 otherwise). Prints a table and one
JSON line; exits 1 when any answer was not good.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _serve
from _serve import Gunicorn, Meter, Spec, Wrk

try:
    from _goals import figure  # the lines bench/run_all.py gathers into its summary
except ImportError:  # a tree without it: the table and the JSON line only
    figure = None

GOAL_RATIO = 0.6
VERIFY_PATH = f"/api/v1/orgs/{_serve.ORG}/verify"
ECHO_PATH = "/api/v1/bench/echo"
VALID = '"valid":true'  # how Flask's compact JSON writes it; checked by the sanity request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="PostgreSQL server URL (a database to CREATE DATABASE from)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each phase in each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers (deploy/gunicorn.conf.py: one per core)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--rate-limits", choices=_serve.RATE_LIMITS, default="database",
                        help="where verify's rate-limit count goes (off: not counted)")
    parser.add_argument("--py-spy", metavar="DIR", type=Path,
                        help="after the rounds, profile the workers during one more phase of"
                        " each kind (not counted) and summarise it (py-spy must be installed)")
    args = parser.parse_args()
    if args.py_spy is not None and _serve.py_spy() is None:
        _serve.refuse("--py-spy: py-spy is not installed (`.venv/bin/pip install py-spy`)")

    wrk_binary = _serve.need_wrk()
    _serve.need_gunicorn()
    url = _serve.postgres_url(args.url)
    admin = _serve.admin_engine(url)
    info = _serve.machine(admin, {"wrk": wrk_binary})  # the load average before we start
    _serve.print_machine(info)
    _serve.terminate_as_interrupt()

    tmp = Path(tempfile.mkdtemp(prefix="wallet-bench-http-verify-"))
    try:
        # Undone in reverse order, whatever happens: wrk, gunicorn, the database, the files.
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
            cleanup.callback(admin.dispose)
            database = cleanup.enter_context(
                _serve.scratch_database(admin, url, "wallet_bench_http_verify"))
            env = _serve.environment(database, "https://wallet.bench.invalid", tmp / "server",
                                     rate_limits=args.rate_limits)
            t0 = time.monotonic()
            note = _serve.organisation_with_a_note(env, tmp)
            server = Gunicorn("wallet", env, tmp / "server", args.workers, app="_app:create()")
            cleanup.callback(server.stop)
            wrk = Wrk(wrk_binary, tmp)
            cleanup.callback(wrk.stop)
            server.start()
            server.wait_healthy(time.monotonic() + 60)
            print(f"prepared acme, one note and gunicorn ({args.workers} workers) in"
                  f" {time.monotonic() - t0:.1f}s", file=sys.stderr)
            result = measure(args, server, wrk, note, tmp)
            result["tracebacks_in_server_log"] = server.tracebacks()
    except KeyboardInterrupt:
        print("http_verify: interrupted; stopped what it started and dropped its database",
              file=sys.stderr)
        return 130
    result["machine"] = info
    report(result, args)
    print(json.dumps(result, sort_keys=True))
    good = result["bad_answers"] == 0 and result["tracebacks_in_server_log"] == 0
    return 0 if good else 1


def measure(args: argparse.Namespace, server: Gunicorn, wrk: Wrk, note: str,
            tmp: Path) -> dict:
    body = tmp / "verify.json"
    body.write_bytes(json.dumps({"note": note}).encode())

    # The sanity requests: verify says valid, the echo answers; both as wrk will see them.
    status, raw = _serve.post_json(server.base + VERIFY_PATH, body.read_bytes())
    answer = json.loads(raw)
    if status != 200 or answer.get("valid") is not True or VALID.encode() not in raw:
        raise RuntimeError(f"verify did not answer 200 valid: {status} {raw[:500]!r}")
    status, raw = _serve.post_json(server.base + ECHO_PATH, body.read_bytes())
    if status != 200 or json.loads(raw).get("ok") is not True:
        raise RuntimeError(f"the echo route did not answer: {status} {raw[:300]!r}")

    specs = {
        "verify": _serve.write_specs(tmp, "verify", [
            Spec("verify", "POST", VERIFY_PATH, body, VALID)]),
        "plain": _serve.write_specs(tmp, "plain", [
            Spec("plain", "POST", ECHO_PATH, body, '"ok":true')]),
    }
    sessions = {"gunicorn": _serve.session_of(server.process)}
    database = make_url(server.env["WALLET_DATABASE_URL"]).database

    def run(kind: str, seconds: float) -> _serve.WrkRun:
        return wrk.run(server.base, specs[kind], seconds=seconds,
                       connections=args.connections, threads=args.wrk_threads)

    for kind in specs:  # warm-up: connection pools, caches, the workers' first requests
        run(kind, 2)
    meters = {kind: Meter() for kind in specs}
    runs: dict[str, list[_serve.WrkRun]] = {kind: [] for kind in specs}
    round_ratios = []
    for number in range(args.rounds):
        order = list(specs) if number % 2 == 0 else list(reversed(specs))
        rates = {}
        for kind in order:
            with meters[kind].measure(sessions, database, (server.process,)):
                done = run(kind, args.seconds)
            runs[kind].append(done)
            rates[kind] = done.rate
        round_ratios.append(round(rates["verify"] / rates["plain"], 3))
        print(f"round {number + 1}: verify {rates['verify']:.0f}/s, plain"
              f" {rates['plain']:.0f}/s, ratio {round_ratios[-1]:.3f}", file=sys.stderr)

    profiles = {}
    if args.py_spy is not None:
        binary = _serve.py_spy()
        assert binary is not None
        args.py_spy.mkdir(parents=True, exist_ok=True)
        workers = sorted(_serve.worker_cpu(server.process))
        for kind in specs:
            # Every worker: wrk's keep-alive connections stay with the worker that accepted
            # them, and one may hold most of them.
            outs = [args.py_spy / f"{kind}-worker{n + 1}.txt" for n in range(len(workers))]
            spies = [_serve.record(binary, pid, args.seconds, out)
                     for pid, out in zip(workers, outs, strict=True)]
            run(kind, args.seconds)
            for spy in spies:
                try:
                    spy.wait(args.seconds + 60)  # it writes its file when its time is over
                finally:
                    _serve.stop_group(spy, grace=10)
            profiles[kind] = {"raw": [str(o) for o in outs], **_serve.profile_summary(outs)}

    result: dict = {"bench": "http_verify", "connections": args.connections,
                    "workers": args.workers, "threads_per_worker": 4, "rounds": args.rounds,
                    "rate_limits": args.rate_limits,
                    "seconds_per_phase": args.seconds, "round_ratios": round_ratios}
    bad = 0
    for kind, done_runs in runs.items():
        requests = sum(r.requests for r in done_runs)
        seconds = sum(r.seconds for r in done_runs)
        good = sum(r.ok.get(kind, 0) for r in done_runs)
        bad += sum(r.bad for r in done_runs)
        meter = meters[kind]
        result[kind] = {
            "requests": requests, "good": good, "seconds": round(seconds, 2),
            "per_second": round(requests / seconds, 1) if seconds else 0.0,
            "p50_ms": round(_serve.median([r.latency_ms["p50"] for r in done_runs]), 2),
            "p99_ms": round(_serve.median([r.latency_ms["p99"] for r in done_runs]), 2),
            "max_ms": round(max(r.latency_ms["max"] for r in done_runs), 1),
            "not_2xx": sum(r.not_2xx for r in done_runs),
            "unmarked": sum(r.unmarked for r in done_runs),
            "socket_errors": {k: sum(r.errors[k] for r in done_runs)
                              for k in done_runs[0].errors},
            "cpu_ms_per_request": meter.per_request_ms(requests),
            "cpus_busy": round(meter.busy_share, 3),
            # CPU seconds per second: gunicorn, our PostgreSQL backends and wrk together
            "cpus_used_by_the_bench": round(meter.cpus_used(("gunicorn", "postgres", "wrk")),
                                            2),
            "worker_cpu": meter.worker_load(),  # each worker's share of one CPU
        }
    ratio = result["verify"]["per_second"] / result["plain"]["per_second"]
    result.update(ratio=round(ratio, 3), goal_ratio=GOAL_RATIO, met=ratio >= GOAL_RATIO,
                  bad_answers=bad)
    if profiles:
        result["profiles"] = profiles
    return result


def report(result: dict, args: argparse.Namespace) -> None:
    print(f"\nHTTP verify under gunicorn ({result['workers']} workers x 4 threads) on"
          f" PostgreSQL, wrk {args.connections} connections, {args.rounds} rounds x"
          f" {args.seconds:g} s per phase; rate limits counted: {args.rate_limits}")
    print(f"{'':34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}{'bad':>6}")
    for kind, label in (("verify", f"verify  POST {VERIFY_PATH}"),
                        ("plain", f"plain   POST {ECHO_PATH}")):
        r = result[kind]
        bad = r["not_2xx"] + r["unmarked"] + sum(r["socket_errors"].values())
        print(f"{label:34}{r['per_second']:>9.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['requests']:>10}{bad:>6}")
    for kind in ("verify", "plain"):
        split = result[kind]["cpu_ms_per_request"]
        print(f"CPU ms per {kind} request: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                          split.items())
              + f" (total {sum(split.values()):.2f}; CPUs {result[kind]['cpus_busy']:.0%} busy;"
              f" the bench used {result[kind]['cpus_used_by_the_bench']:.2f} CPUs, the"
              f" workers {' + '.join(map(str, result[kind]['worker_cpu']))})")
    for kind, found in result.get("profiles", {}).items():
        print(f"py-spy, every worker, {kind} ({found['samples']} samples holding the GIL;"
              f" {', '.join(found['raw'])}): " + (", ".join(f"{k} {v:.0%}" for k, v in
                                                 found["areas"].items()) or "no samples"))
        if found["wallet_functions"]:
            print("  in wallet (inclusive): " + ", ".join(
                f"{k} {v:.0%}" for k, v in found["wallet_functions"].items()))
    verdict = "met" if result["met"] else "NOT met"
    print(f"ratio verify/plain = {result['ratio']:.3f} (rounds:"
          f" {', '.join(map(str, result['round_ratios']))}); goal >= {GOAL_RATIO}: {verdict}")
    if figure is not None:
        figure("http_verify", f"ratio verify/plain, {args.connections} connections",
               result["ratio"], ">=", GOAL_RATIO)
        for kind in ("verify", "plain"):
            figure("http_verify", f"{kind} p99", result[kind]["p99_ms"], "report",
                   unit=" ms", digits=1)


if __name__ == "__main__":
    sys.exit(main())
