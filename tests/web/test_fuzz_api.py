"""Schemathesis against /api/v1/openapi.json, in process (WSGI), on both databases.

Every operation runs the examples, coverage and fuzzing phases in positive and negative
modes with every check on: no server error, every status, content type, header and body
as documented, schema-valid requests accepted and schema-invalid ones refused. A
personal token (ada at acme) and a service token (usage, holds) authenticate the calls.

Sized for CI by `WALLET_FUZZ_EXAMPLES` (fuzzing examples per operation, default 40;
about a minute for both databases) and `WALLET_FUZZ_SEED` (fixed by default, so a CI
failure replays). Bigger: `WALLET_FUZZ_EXAMPLES=500 WALLET_FUZZ_SEED=$RANDOM`. Stateful
runs (links between operations) are off: the API has no OpenAPI links yet.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask

from tests import fed_support, support
from tests.fed_support import ADA
from tests.support import World

HOLDER = {"kty": "OKP", "crv": "Ed25519",  # RFC 8037 Appendix A.2
          "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
HOLDER_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"  # its RFC 7638 thumbprint
EXAMPLES = int(os.environ.get("WALLET_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("WALLET_FUZZ_SEED", "20261127"))

# Schema-valid requests that the API still refuses for what they mean, not for their
# shape: 422 (insufficient funds, a note that does not verify, an idempotency key used
# with another body) is a refusal the schema cannot express; the rest are the defaults.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
# Schema-invalid requests must be refused: the defaults, and 413 (a token over 16 KiB).
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428",
           "429", "5xx"]

CONFIG = {
    "seed": SEED,
    "suppress-health-check": ["too_slow"],  # a CI machine shared with other jobs
    "generation": {"max-examples": EXAMPLES, "mode": "all",
                   # NUL is refused at the boundary by design (tests/web/test_hostile_input.py)
                   "allow-x00": False, "database": "none"},
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED},
               "negative_data_rejection": {"expected-statuses": REFUSED}},
    "phases": {"stateful": {"enabled": False}},
    # Deep into the handlers: generated slugs would almost all be 404 (the slug pattern
    # and unknown organisations are covered by tests/web/test_hostile_input.py).
    "parameters": {"path.slug": "acme"},
}

_counts: dict[str, int] = {}
_B64_KEY = re.compile("[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_MODEL = re.compile("[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")


def _real_values(body: Any) -> None:
    """Put real values where the schema can only give their shape.

    That `x` is a point of large order on Ed25519 and `kid` its thumbprint, that a
    person is a member, that a model has a price: beyond JSON Schema. A random `x` that
    fits the pattern is refused (400), rightly; a random person is 404. Values that do
    not fit the schema are left as generated, so negative cases stay negative; of the
    people and models that fit, every other one (by length) is made real.
    """
    if not isinstance(body, dict):
        return
    if isinstance(body.get("person"), str) and body["person"].strip() and \
            len(body["person"]) % 2 == 0:
        body["person"] = ADA
    if isinstance(body.get("model"), str) and _MODEL.fullmatch(body["model"]) and \
            len(body["model"]) % 2 == 0:
        body["model"] = "claude-sonnet-4"
    jwk = body.get("holder_jwk")
    if not isinstance(jwk, dict):
        return
    if isinstance(jwk.get("x"), str) and _B64_KEY.fullmatch(jwk["x"]):
        jwk["x"] = HOLDER["x"]
    if isinstance(jwk.get("kid"), str) and _B64_KEY.fullmatch(jwk["kid"]):
        jwk["kid"] = HOLDER_KID


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """The test app, without the public endpoints' rate limit (it would answer 429 early)."""
    return support.test_config(db_url, tmp_path, WALLET_PUBLIC_RATE_PER_MINUTE=1_000_000)


@pytest.fixture
def fuzz_tokens(app: Flask, world: World) -> Iterator[dict[str, str]]:
    """ada's personal token and acme's service token; acme can sign notes."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    fed_support.generate_keys(app, "acme", "globex")
    fed_support.give(app, "acme", ADA, "5000.00")  # exports and usage can succeed
    personal = fed_support.api_token(app, "acme")
    with app.app_context():
        service, _ = orgs.create_token(db.session(), slug="acme", email=None,
                                       actor=Actor.cli())
    started = time.perf_counter()
    _counts.clear()
    yield {"personal": personal, "service": service}
    print(f"\nschemathesis: {sum(_counts.values())} requests in "
          f"{time.perf_counter() - started:.1f} s ({EXAMPLES} examples, seed {SEED}):",
          ", ".join(f"{k}: {v}" for k, v in sorted(_counts.items())))


@pytest.fixture
def api_schema(app: Flask, fuzz_tokens: dict[str, str], request: pytest.FixtureRequest) -> Any:
    # schemathesis 4.32 renames the test node per operation through `_nodeid`, which
    # pytest 9 no longer has: give it the attribute (pytest reports by `nodeid`).
    request.node._nodeid = request.node.nodeid
    config = schemathesis.Config.from_dict(CONFIG)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Any, fuzz_tokens: dict[str, str]) -> None:
    service = case.path.endswith("/usage") or "/holds" in case.path  # the gateway's routes
    token = fuzz_tokens["service" if service else "personal"]
    _real_values(case.body)
    response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
    seen = f"{case.method} {case.path.rsplit('/', 1)[-1]} {response.status_code}"
    _counts[seen] = _counts.get(seen, 0) + 1
