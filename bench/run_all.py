"""Run every benchmark and print each figure with its goal: what `make bench` does.

Each benchmark runs as its own process (its output streams through as it runs) and
prints its figures through `bench/_goals.py`; this script gathers those lines into one
summary at the end: benchmark, figure, value, goal, and met / NOT met / report.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--quick] [--strict]

`--quick` passes each benchmark its short settings (a smoke run: the figures are noisy);
`--strict` exits 3 when a goal is not met. Exit 1 when a benchmark failed or printed no
figure (nothing was measured), else 0. PostgreSQL comes from WALLET_BENCH_POSTGRES_URL,
else WALLET_TEST_POSTGRES_URL, else the machine's 127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _goals import parse  # noqa: E402 (bench/ is not a package)


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    quick: tuple[str, ...] = ()
    python: Path = ROOT / ".venv" / "bin" / "python"


LITELLM_PYTHON = ROOT / ".venv-litellm" / "bin" / "python"
BENCHES = (
    Bench("verify", "verify.py", ("--notes", "2000", "--repeat", "3")),
    Bench("vesting", "vesting.py"),
    Bench("honour", "honour.py", ("--seconds", "10", "--plain-seconds", "4", "--rounds", "1",
                                  "--notes", "1500")),
    Bench("spend", "spend.py", ("--seconds", "6", "--plain-seconds", "3", "--rounds", "1",
                                "--paced-seconds", "4")),
    Bench("litellm_hook", "litellm_hook.py", ("--calls", "100", "--rounds", "1"), LITELLM_PYTHON),
    Bench("ratelimit", "ratelimit.py", ("--requests", "300", "--rounds", "2")),
    Bench("http_verify", "http_verify.py", ("--seconds", "4", "--rounds", "1")),
    Bench("status_fetch", "status_fetch.py", ("--quick",)),
    Bench("export", "export.py", ("--seconds", "4", "--rounds", "1")),
    Bench("balancer", "balancer.py", ("--seconds", "4", "--rounds", "1")),
)


def run(bench: Bench, quick: bool) -> tuple[int, list[tuple[str, str, str, str, str]], float]:
    """Run one benchmark, echoing its output; its exit code, figures and seconds."""
    command = [str(bench.python), "-u", str(HERE / bench.script),
               *(bench.quick if quick else ())]
    print(f"\n### {bench.name}: {' '.join(command[2:])}", flush=True)
    started, figures = time.monotonic(), []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            found = parse(line.rstrip("\n"))
            if found is not None:
                figures.append(found)
    return process.returncode, figures, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES],
                        help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="short settings (smoke run)")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a goal is not met")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    missing = [b for b in chosen if not b.python.exists()]
    if missing:
        print(f"bench: {missing[0].python} is missing; run `make bench` (it installs it)",
              file=sys.stderr)
        return 2
    os.environ.setdefault("WALLET_BENCH_POSTGRES_URL", os.environ.get(
        "WALLET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{len(chosen)} benchmarks on {os.cpu_count()} CPUs, load average {load}"
          f" at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", flush=True)
    rows, failed = [], []
    for bench in chosen:
        code, figures, seconds = run(bench, args.quick)
        if code != 0 or not figures:
            failed.append(f"{bench.name} (exit {code}, {len(figures)} figures)")
        rows += figures
        print(f"### {bench.name}: exit {code}, {len(figures)} figures, {seconds:.0f} s",
              flush=True)
    print("\n== summary" + (" (--quick: smoke settings, noisy)" if args.quick else ""))
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(("bench", "figure", "value", "goal", "verdict"))]
    for row in [("bench", "figure", "value", "goal", "verdict"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    judged = [r for r in rows if r[4] != "report"]
    unmet = [r for r in judged if r[4] != "met"]
    print(f"{len(judged) - len(unmet)} of {len(judged)} goals met;"
          f" {len(rows) - len(judged)} figures reported without a threshold")
    if failed:
        print("did not run to the end: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 3 if args.strict and unmet else 0


if __name__ == "__main__":
    raise SystemExit(main())
