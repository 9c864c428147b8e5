"""Benchmark: verifying credit notes and presentations, against raw Ed25519 and PyJWT.

In one run and on the same tokens (N distinct notes from one issuer, each presented
once to one verifier), per operation:

  raw           Ed25519 verify of the note's signing input (cryptography, key imported)
  note          wallet.core.notes.verify
  presentation  wallet.core.notes.verify_presentation (note + KB-JWT, nonce accepted)
  pyjwt         PyJWT doing a note's checks: read kid/typ from the unverified header,
                look the key up in a dict of PyJWK built from the JWKS, jwt.decode with
                algorithms=["EdDSA"], issuer and required claims, then vct and amount

Each repetition times every method over all N tokens, the methods taking turns in an
order that rotates, with the garbage collector off. The table reports the median
per-operation time over the repetitions (the goals apply to these ratios), and the
ratios of the fastest repetitions, which move less when other processes share the CPU.
Goals: note/raw <= 1.2, presentation/raw <= 2.3, pyjwt/note >= 1.35.

    .venv/bin/python bench/verify.py [--notes 200] [--repeat 31]

Prints a table, then one JSON line with the same numbers and the machine's details.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cryptography
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _goals import figure

from wallet.core import jose, notes
from wallet.core.errors import UntrustedIssuer
from wallet.core.money import Money

ISSUER = "https://issuer.example/orgs/acme"
AUDIENCE = "https://verifier.example/orgs/globex"
NONCE = "bench-nonce-" + "A" * 20
GOALS = {"note/raw": ("<=", 1.2), "presentation/raw": ("<=", 2.3), "pyjwt/note": (">=", 1.35)}
_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,12})(\.[0-9]{1,6})?")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_tokens(count: int, now: int) -> dict[str, Any]:
    """Issue `count` notes with distinct holders, and present each once."""
    issuer_key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = jose.PublicKey.from_jwk(jose.public_jwk(issuer_key))
    issued, presented = [], []
    for i in range(count):
        holder = Ed25519PrivateKey.from_private_bytes(i.to_bytes(4, "big") * 8)
        note = notes.issue(
            issuer=ISSUER, jti=notes.new_jti(i.to_bytes(16, "big")), iat=now - 60,
            exp=now + 365 * 86_400, amount=Money(1_000_000 * (i + 1)),
            holder_jwk=jose.public_jwk(holder), status_uri=ISSUER + "/status/1",
            status_idx=i * 7919, kid=public.kid, key=issuer_key)
        issued.append(note)
        presented.append(notes.present(note, holder_key=holder, audience=AUDIENCE,
                                       nonce=NONCE, iat=now))
    jwks = {"keys": [{**public.jwk, "kid": public.kid}]}
    return {"notes": issued, "presentations": presented, "jwks": jwks,
            "key": issuer_key.public_key()}


def methods(tokens: dict[str, Any], now: int) -> dict[str, Callable[[int, int], None]]:
    """One callable per method; `run(start, stop)` verifies tokens[start:stop] once each."""
    keys = notes.IssuerKeys(ISSUER, {kid: notes.KeyInfo(key)
                                     for kid, key in jose.jwks_keys(tokens["jwks"]).items()})

    def resolve(issuer: str) -> notes.IssuerKeys:
        if issuer != ISSUER:
            raise UntrustedIssuer(issuer)
        return keys

    def nonce_ok(nonce: str) -> None:
        return None

    public = tokens["key"]
    raw_inputs = []
    for text in tokens["notes"]:
        signing_input, _, signature = text[:-1].rpartition(".")
        raw_inputs.append((jose.b64url_decode(signature), signing_input.encode("ascii")))
    pyjwks = {jwk["kid"]: jwt.PyJWK(jwk) for jwk in tokens["jwks"]["keys"]}
    note_texts, presentations = tokens["notes"], tokens["presentations"]
    jwts = [text[:-1] for text in note_texts]

    def raw(start: int, stop: int) -> None:
        for signature, data in raw_inputs[start:stop]:
            public.verify(signature, data)

    def note(start: int, stop: int) -> None:
        for text in note_texts[start:stop]:
            notes.verify(text, resolve=resolve, now=now)

    def presentation(start: int, stop: int) -> None:
        for text in presentations[start:stop]:
            notes.verify_presentation(text, resolve=resolve, audience=AUDIENCE, now=now,
                                      nonce_ok=nonce_ok)

    def pyjwt(start: int, stop: int) -> None:
        for token in jwts[start:stop]:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != notes.NOTE_TYP:
                raise ValueError("typ")
            claims = jwt.decode(token, key=pyjwks[header["kid"]], algorithms=["EdDSA"],
                                issuer=ISSUER,
                                options={"require": ["exp", "iat", "nbf", "iss", "jti"]})
            amount = claims["amount"]
            if claims["vct"] != notes.VCT or type(amount) is not dict \
                    or not isinstance(amount.get("value"), str) \
                    or _AMOUNT.fullmatch(amount["value"]) is None:
                raise ValueError("claims")

    return {"raw": raw, "note": note, "presentation": presentation, "pyjwt": pyjwt}


def measure(runs: dict[str, Callable[[int, int], None]], count: int, repeat: int,
            block: int) -> dict[str, list[float]]:
    """Per-operation nanoseconds of each method, one value per repetition.

    Methods take turns every `block` tokens, in an order that rotates every turn, so a
    burst of load from other processes does not always land on the same method.
    """
    for run in runs.values():  # warm-up: key and header caches, allocator
        run(0, count)
        run(0, count)
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        turn = 0
        for _rep in range(repeat):
            spent = dict.fromkeys(names, 0)
            for start in range(0, count, block):
                turn += 1
                for name in names[turn % len(names):] + names[:turn % len(names)]:
                    t0 = time.perf_counter_ns()
                    runs[name](start, start + block)
                    spent[name] += time.perf_counter_ns() - t0
            for name in names:
                samples[name].append(spent[name] / count)
    finally:
        gc.enable()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--block", type=int, default=0,
                        help="tokens per turn before the next method runs (0: all)")
    args = parser.parse_args()

    now = int(time.time())  # PyJWT checks exp/iat/nbf against the wall clock
    tokens = make_tokens(args.notes, now)
    runs = methods(tokens, now)
    samples = measure(runs, args.notes, args.repeat, args.block or args.notes)
    median = {name: statistics.median(values) for name, values in samples.items()}
    best = {name: min(values) for name, values in samples.items()}
    ratios, best_ratios = _ratios(median), _ratios(best)
    machine = {
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "cryptography": cryptography.__version__, "pyjwt": jwt.__version__,
        "openssl": _openssl_version(), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(),
    }

    print(f"verify benchmark: {args.notes} notes from one issuer, each presented once; "
          f"{args.repeat} repetitions, median per operation")
    print(f"python {machine['python']}, cryptography {machine['cryptography']}, "
          f"PyJWT {machine['pyjwt']}, {machine['openssl']}")
    print(f"cpu {machine['cpu']} x{machine['cpus']}, load average {machine['loadavg']}")
    print()
    print(f"{'method':<14}{'median µs':>11}{'min µs':>10}{'max µs':>10}{'ops/s':>10}")
    for name, values in samples.items():
        print(f"{name:<14}{median[name] / 1000:>11.1f}{min(values) / 1000:>10.1f}"
              f"{max(values) / 1000:>10.1f}{1e9 / median[name]:>10.0f}")
    print()
    print(f"{'ratio':<18}{'median':>7}{'min':>7}  goal (on the median)")
    for name, value in ratios.items():
        op, goal = GOALS[name]
        print(f"{name:<18}{value:>7.2f}{best_ratios[name]:>7.2f}  {op} {goal}  "
              f"{'met' if _met(name, value) else 'NOT met'}")
    for name, value in ratios.items():
        op, goal = GOALS[name]
        figure("verify", f"{name} (median)", value, op, goal)
    print(json.dumps({
        "benchmark": "verify", "notes": args.notes, "repeat": args.repeat,
        "median_ns": {name: round(value) for name, value in median.items()},
        "min_ns": {name: round(min(values)) for name, values in samples.items()},
        "ratios": {name: round(value, 3) for name, value in ratios.items()},
        "ratios_of_min": {name: round(value, 3) for name, value in best_ratios.items()},
        "goals_met": {name: _met(name, value) for name, value in ratios.items()},
        "block": args.block or args.notes,
        "machine": machine,
    }, sort_keys=True))
    return 0


def _ratios(per_op: dict[str, float]) -> dict[str, float]:
    return {"note/raw": per_op["note"] / per_op["raw"],
            "presentation/raw": per_op["presentation"] / per_op["raw"],
            "pyjwt/note": per_op["pyjwt"] / per_op["note"]}


def _met(name: str, value: float) -> bool:
    op, goal = GOALS[name]
    return value <= goal if op == "<=" else value >= goal


def _openssl_version() -> str:
    from cryptography.hazmat.backends.openssl.backend import backend

    return str(backend.openssl_version_text())


if __name__ == "__main__":
    raise SystemExit(main())
