"""Benchmark: throughput through HAProxy of two gunicorn instances against one (issue 14).

On one machine, over one scratch PostgreSQL database (created, migrated and dropped by
this script): two instances of the same organisations, each gunicorn as `make serve-prod`
runs it (deploy/gunicorn.conf.py: 2 workers of 4 threads on two cores, production
settings, the same secrets, keys in the database), behind HAProxy running
deploy/haproxy.cfg itself (TLS terminated there, leastconn, maxconn 16 per instance,
health checks; only its paths and ports swapped, as tests/test_load_balancer.py does).
acme is set up with the CLI and exports one real note.

wrk (32 connections, keep-alive, https) sends the same mix in both phases, each
connection alternating two requests:

  verify  POST /api/v1/orgs/acme/verify with {"note": <that note>} (anonymous; counted
          in the verify rate limit, its quota lifted: every connection is 127.0.0.1)
  jwks    GET /orgs/acme/jwks.json (a cheap public read: the organisation and its keys)

  one     HAProxy with one instance: the second drained through the runtime API (up and
          health-checked, given no request; checked against HAProxy's counters)
  two     HAProxy with both instances ready

The phases alternate (one, two, then two, one, ...) for --rounds rounds of --seconds each.
wrk's Lua script (bench/wrk/requests.lua) counts answers that are not 2xx, verify answers
that do not say "valid":true and jwks answers without "keys"; one urllib request through
HAProxy checks beforehand that verify says valid.

Reported: requests/s of each phase, the ratio two/one, latency p50/p99 (median over the
rounds), how HAProxy split the requests and how many it queued, CPU time per request of
HAProxy, each instance, PostgreSQL (our database's backends, and the server's own
processes), wrk and the rest of the machine, how busy the CPUs were, and a line on where
the time went. No goal beyond reporting: on two cores a second instance has no core of
its own, and the answer is expected near 1x.

    .venv/bin/python bench/balancer.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--seconds 10] [--rounds 3] [--connections 32] [--workers 2] [--wrk-threads 2]

--seconds is each phase's length in each round; --workers is per instance (the same in
both phases). Needs wrk, HAProxy and PostgreSQL (refused with exit 2 otherwise). Prints a
table and one JSON line; exits 1 when any answer was not good.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _serve
from _serve import Gunicorn, HAProxy, Meter, Spec, Wrk

try:
    from _goals import figure  # the lines bench/run_all.py gathers into its summary
except ImportError:  # a tree without it: the table and the JSON line only
    figure = None

VERIFY_PATH = f"/api/v1/orgs/{_serve.ORG}/verify"
JWKS_PATH = f"/orgs/{_serve.ORG}/jwks.json"
VALID = '"valid":true'
KEYS = '{"keys":'  # the start of a JWKS; no verify answer holds it
SERVERS = ("wallet1", "wallet2")
PHASES = ("one", "two")
OURS = ("haproxy", *SERVERS, "postgres", "wrk")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="PostgreSQL server URL (a database to CREATE DATABASE from)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each phase in each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--wrk-threads", type=int, default=2)
    args = parser.parse_args()

    tools = {"wrk": _serve.need_wrk(), "haproxy": _serve.need_haproxy()}
    _serve.need_gunicorn()
    url = _serve.postgres_url(args.url)
    admin = _serve.admin_engine(url)
    info = _serve.machine(admin, tools)  # the load average before we start
    _serve.print_machine(info)
    _serve.terminate_as_interrupt()

    tmp = Path(tempfile.mkdtemp(prefix="wallet-bench-balancer-"))
    try:
        # Undone in reverse order, whatever happens: wrk, HAProxy, the instances, the
        # database, the files.
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
            cleanup.callback(admin.dispose)
            database = cleanup.enter_context(
                _serve.scratch_database(admin, url, "wallet_bench_balancer"))
            balancer = HAProxy(tools["haproxy"], tmp)
            shared = _serve.environment(database, balancer.base, tmp / "setup", {
                "FORWARDED_ALLOW_IPS": _serve.BALANCER_SOURCE})  # the balancer, and only it
            t0 = time.monotonic()
            note = _serve.organisation_with_a_note(shared, tmp)
            instances = []
            for name in SERVERS:
                env = {**shared, "WALLET_INSTANCE_PATH": str(tmp / name / "instance"),
                       "WALLET_KEYSTORE": str(tmp / name / "keys")}
                instance = Gunicorn(name, env, tmp / name, args.workers)
                cleanup.callback(instance.stop)
                instances.append(instance)
            cleanup.callback(balancer.stop)
            wrk = Wrk(tools["wrk"], tmp)
            cleanup.callback(wrk.stop)
            for instance in instances:
                instance.start()
            deadline = time.monotonic() + 60
            for instance in instances:
                instance.wait_healthy(deadline)
            balancer.start(balancer.configure(_serve.certificate(tmp),
                                              {i.name: i.port for i in instances}))
            for name in SERVERS:
                balancer.wait_status(name, "UP", deadline)
            print(f"prepared acme, one note, {len(instances)} instances ({args.workers}"
                  f" workers each) and HAProxy in {time.monotonic() - t0:.1f}s",
                  file=sys.stderr)
            result = measure(args, balancer, instances, wrk, note, tmp,
                             make_url(database).database or "")
            result["tracebacks_in_server_logs"] = sum(i.tracebacks() for i in instances)
    except KeyboardInterrupt:
        print("balancer: interrupted; stopped what it started and dropped its database",
              file=sys.stderr)
        return 130
    result["machine"] = info
    report(result, args)
    print(json.dumps(result, sort_keys=True))
    good = result["bad_answers"] == 0 and result["tracebacks_in_server_logs"] == 0
    return 0 if good else 1


def use(balancer: HAProxy, phase: str) -> None:
    """One instance (the second drained) or both, and wait until HAProxy says so."""
    wanted = {"wallet1": "UP", "wallet2": "DRAIN" if phase == "one" else "UP"}
    for name, status in wanted.items():
        state = "drain" if status == "DRAIN" else "ready"
        balancer.command(f"set server wallet/{name} state {state}")
    for name, status in wanted.items():
        balancer.wait_status(name, status, time.monotonic() + 10)


def measure(args: argparse.Namespace, balancer: HAProxy, instances: list[Gunicorn], wrk: Wrk,
            note: str, tmp: Path, database: str) -> dict[str, Any]:
    body = tmp / "verify.json"
    body.write_bytes(json.dumps({"note": note}).encode())
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # our own self-signed certificate, on loopback

    status, raw = _serve.post_json(balancer.base + VERIFY_PATH, body.read_bytes(),
                                   context=unverified)
    if status != 200 or json.loads(raw).get("valid") is not True or VALID.encode() not in raw:
        raise RuntimeError(f"verify through HAProxy did not answer 200 valid: {status}"
                           f" {raw[:500]!r}")
    specs = _serve.write_specs(tmp, "mix", [
        Spec("verify", "POST", VERIFY_PATH, body, VALID),
        Spec("jwks", "GET", JWKS_PATH, None, KEYS),
    ])
    sessions = {"haproxy": _serve.session_of(balancer.process),
                **{i.name: _serve.session_of(i.process) for i in instances}}

    def run(seconds: float) -> _serve.WrkRun:
        return wrk.run(balancer.base, specs, seconds=seconds, connections=args.connections,
                       threads=args.wrk_threads)

    use(balancer, "two")
    run(3)  # warm-up of both instances: pools, caches, TLS sessions

    meters = {phase: Meter() for phase in PHASES}
    runs: dict[str, list[_serve.WrkRun]] = {phase: [] for phase in PHASES}
    served = {phase: dict.fromkeys(SERVERS, 0) for phase in PHASES}
    queued = dict.fromkeys(PHASES, 0)
    connects = dict.fromkeys(PHASES, 0)
    round_ratios = []
    for number in range(args.rounds):
        order = PHASES if number % 2 == 0 else tuple(reversed(PHASES))
        rates = {}
        for phase in order:
            use(balancer, phase)
            balancer.command("clear counters")  # the max values (qmax): this phase's only
            stats = balancer.servers()
            before = {n: int(row["stot"]) for n, row in stats.items()}
            opened0 = sum(int(row.get("connect") or 0) for row in stats.values())
            with meters[phase].measure(sessions, database,
                                       tuple(i.process for i in instances)):
                done = run(args.seconds)
            stats = balancer.servers()
            for name in SERVERS:
                served[phase][name] += int(stats[name]["stot"]) - before[name]
            # Connections HAProxy opened to the instances (the rest of its requests went
            # on idle connections it kept: `reuse`).
            connects[phase] += sum(int(row.get("connect") or 0)
                                   for row in stats.values()) - opened0
            queued[phase] = max(queued[phase], _backend_qmax(balancer))
            if phase == "one" and int(stats["wallet2"]["stot"]) != before["wallet2"]:
                raise RuntimeError("HAProxy sent requests to the drained instance")
            runs[phase].append(done)
            rates[phase] = done.rate
        round_ratios.append(round(rates["two"] / rates["one"], 3))
        print(f"round {number + 1}: one instance {rates['one']:.0f}/s, two"
              f" {rates['two']:.0f}/s, ratio {round_ratios[-1]:.3f}", file=sys.stderr)
    use(balancer, "two")

    result: dict[str, Any] = {
        "bench": "balancer", "connections": args.connections,
        "workers_per_instance": args.workers, "threads_per_worker": 4,
        "rounds": args.rounds, "seconds_per_phase": args.seconds,
        "round_ratios": round_ratios, "mix": ["POST " + VERIFY_PATH, "GET " + JWKS_PATH],
    }
    bad = 0
    for phase, done_runs in runs.items():
        requests = sum(r.requests for r in done_runs)
        seconds = sum(r.seconds for r in done_runs)
        bad += sum(r.bad for r in done_runs)
        meter = meters[phase]
        result[phase] = {
            "requests": requests, "seconds": round(seconds, 2),
            "per_second": round(requests / seconds, 1) if seconds else 0.0,
            "good": {k: sum(r.ok.get(k, 0) for r in done_runs) for k in ("verify", "jwks")},
            "p50_ms": round(_serve.median([r.latency_ms["p50"] for r in done_runs]), 2),
            "p99_ms": round(_serve.median([r.latency_ms["p99"] for r in done_runs]), 2),
            "max_ms": round(max(r.latency_ms["max"] for r in done_runs), 1),
            "not_2xx": sum(r.not_2xx for r in done_runs),
            "unmarked": sum(r.unmarked for r in done_runs),
            "socket_errors": {k: sum(r.errors[k] for r in done_runs)
                              for k in done_runs[0].errors},
            "served_by": served[phase], "haproxy_max_queued": queued[phase],
            "server_connections_opened": connects[phase],
            "cpu_ms_per_request": meter.per_request_ms(requests),
            "cpus_busy": round(meter.busy_share, 3),
            # CPU seconds per second of HAProxy, the instances, our PostgreSQL backends, wrk
            "cpus_used_by_the_bench": round(meter.cpus_used(OURS), 2),
            "worker_cpu": [w for w in meter.worker_load() if w >= 0.05],  # the serving ones
        }
    result.update(ratio=round(result["two"]["per_second"] / result["one"]["per_second"], 3),
                  bad_answers=bad)
    result["why"] = explain(result)
    return result


def _backend_qmax(balancer: HAProxy) -> int:
    """The backend's max queue since the last `clear counters` (the BACKEND row)."""
    lines = balancer.command("show stat").splitlines()
    for row in csv.DictReader([lines[0].lstrip("# ")] + [x for x in lines[1:] if x]):
        if row["pxname"] == "wallet" and row["svname"] == "BACKEND":
            return int(row["qmax"] or 0)
    return 0


def _workers(phase: dict[str, Any]) -> str:
    return " + ".join(f"{w:.0%}" for w in phase["worker_cpu"]) or "-"


def explain(result: dict[str, Any]) -> str:
    """Where the time went, and what limited one instance and then two on this machine."""
    one, two = result["one"], result["two"]
    cpus = len(os.sched_getaffinity(0))
    split = one["cpu_ms_per_request"]
    parts = {"gunicorn": sum(split.get(n, 0.0) for n in SERVERS),
             "PostgreSQL": split.get("postgres", 0.0) + split.get("postgres-server", 0.0),
             "HAProxy": split.get("haproxy", 0.0), "wrk": split.get("wrk", 0.0)}
    ours = sum(parts.values()) or 1.0
    where = ", ".join(f"{k} {v:.2f} ms ({v / ours:.0%})" for k, v in parts.items())
    used = (f"with one instance the benchmark's processes used"
            f" {one['cpus_used_by_the_bench']:.2f} of the {cpus} CPUs (its serving workers"
            f" {_workers(one)} of a CPU), with two {two['cpus_used_by_the_bench']:.2f}"
            f" (workers {_workers(two)})")
    if result["ratio"] > 1.1 and one["cpus_used_by_the_bench"] < 0.85 * cpus:
        limit = ("one instance left CPU unused: each worker is one process with one GIL, and"
                 " its threads also wait on PostgreSQL round trips (five per verify), so two"
                 " workers do not keep two CPUs busy; the second instance's workers fill"
                 " that gap (more workers in one instance would too). What is left is the"
                 f" {cpus} CPUs themselves: at {two['cpus_used_by_the_bench']:.2f} of"
                 f" {cpus} (the machine {two['cpus_busy']:.0%} busy), more instances here"
                 " only add processes")
    elif one["cpus_used_by_the_bench"] >= 0.85 * cpus:
        limit = (f"one instance already kept the {cpus} CPUs busy, so a second on the same"
                 " machine adds processes, not CPU time; the bottleneck is CPU, most of it"
                 " Python in the gunicorn workers: more instances pay off on more cores or"
                 " hosts")
    else:
        limit = ("neither phase kept the CPUs busy with the benchmark's own work: other"
                 f" people's processes and the kernel took the rest (machine"
                 f" {one['cpus_busy']:.0%} / {two['cpus_busy']:.0%} busy), or the limit is"
                 f" elsewhere (HAProxy queued up to {one['haproxy_max_queued']} requests"
                 " behind maxconn 16 per instance)")
    for phase, instances in (("one", 1), ("two", 2)):
        expected = instances * result["workers_per_instance"]
        serving = len(result[phase]["worker_cpu"])
        if serving < expected:
            limit += (f"; with {phase} only {serving} of {expected} workers served (over 5 %"
                      " of a CPU): HAProxy's connections to an instance stay with the worker"
                      " that accepted them")
    h1, h2 = split.get("haproxy", 0.0), two["cpu_ms_per_request"].get("haproxy", 0.0)
    if h2 and h1 > 1.5 * h2:
        limit += (f"; HAProxy spent {h1:.2f} ms per request with one instance against"
                  f" {h2:.2f} with two: with one, the connections over its maxconn (16)"
                  f" waited in its queue (up to {one['haproxy_max_queued']}), and queueing"
                  " costs it CPU")
    others = split.get("other", 0.0) / (ours + split.get("other", 0.0))
    busy = (f"; other people's processes took {others:.0%} of the CPU time counted: a busy"
            " machine, judge the ratio only" if others >= 0.2 else "")
    return f"CPU per request with one instance: {where}; {used}; {limit}{busy}"


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nThrough HAProxy (deploy/haproxy.cfg, TLS): one gunicorn instance vs two"
          f" ({result['workers_per_instance']} workers x 4 threads each), one PostgreSQL;"
          f" wrk {args.connections} connections, mix verify POST + jwks GET, {args.rounds}"
          f" rounds x {args.seconds:g} s per phase")
    print(f"{'':16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}{'bad':>6}"
          f"  {'served by wallet1/wallet2':<26}{'queued':>7}{'CPUs busy':>11}")
    for phase, label in (("one", "one instance"), ("two", "two instances")):
        r = result[phase]
        bad = r["not_2xx"] + r["unmarked"] + sum(r["socket_errors"].values())
        split = f"{r['served_by']['wallet1']}/{r['served_by']['wallet2']}"
        print(f"{label:16}{r['per_second']:>9.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['requests']:>10}{bad:>6}  {split:<26}{r['haproxy_max_queued']:>7}"
              f"{r['cpus_busy']:>11.0%}")
    print("HAProxy opened " + ", ".join(
        f"{result[p]['server_connections_opened']} connections to the instances ({p})"
        for p in PHASES) + "; every other request reused a kept one")
    for phase in PHASES:
        split = result[phase]["cpu_ms_per_request"]
        print(f"CPU ms per request, {phase}: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                         split.items())
              + f" (total {sum(split.values()):.2f}; the bench used"
              f" {result[phase]['cpus_used_by_the_bench']:.2f} CPUs, workers"
              f" {_workers(result[phase])} of one)")
    print(f"ratio two/one = {result['ratio']:.3f} (rounds:"
          f" {', '.join(map(str, result['round_ratios']))})")
    print(f"why: {result['why']}")
    print(f"goal: report ({result['machine']['nproc']} CPUs)")
    if figure is not None:
        figure("balancer", f"ratio two instances/one ({result['machine']['nproc']} CPUs)",
               result["ratio"], "report")


if __name__ == "__main__":
    sys.exit(main())
