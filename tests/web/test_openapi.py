"""The OpenAPI document describes exactly the API routes that exist."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient


def test_openapi_lists_every_api_route_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": app.config["WALLET_BASE_URL"]}]
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        served |= {(path, m) for m in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert documented == served


def test_every_reference_resolves(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    text = str(doc)
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert ref[1] in doc["components"][ref[0]], ref


def test_every_route_with_a_body_declares_413(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    with_body = [(path, method, op) for path, ops in doc["paths"].items()
                 for method, op in ops.items() if "requestBody" in op]
    assert len(with_body) >= 6
    for path, method, op in with_body:
        assert "413" in op["responses"], (method, path)


def test_every_401_is_documented_with_its_challenge(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    unauthorized = doc["components"]["responses"]["Unauthorized"]
    assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "401" in op["responses"]:
                assert op["responses"]["401"]["$ref"].endswith("/Unauthorized"), (method, path)


def _validator(doc: dict[str, object], name: str) -> object:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


HOLDER = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


@pytest.mark.parametrize(("schema", "body", "valid"), [
    ("ExportRequest", {"amount": "12.50", "holder_jwk": HOLDER}, True),
    ("ExportRequest", {"amount": "0.000001", "currency": "USD", "holder_jwk": HOLDER}, True),
    ("ExportRequest", {"amount": "1000000000000", "holder_jwk": HOLDER}, True),
    # What the handler refuses, the schema refuses (regression: these all passed it).
    ("ExportRequest", {"amount": "", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "x", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "0", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "0.000000", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "1.1234567", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "1000000000000.01", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "-1", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": 12, "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "1.00", "currency": "usd", "holder_jwk": HOLDER}, False),
    ("ExportRequest", {"amount": "1.00", "holder_jwk": HOLDER, "memo": "x"}, False),
    ("ExportRequest", {"amount": "1.00", "holder_jwk": {**HOLDER, "d": "secret"}}, False),
    ("ExportRequest", {"amount": "1.00", "holder_jwk": {**HOLDER, "crv": "X25519"}}, False),
    ("ExportRequest", {"amount": "1.00", "holder_jwk": {**HOLDER, "x": "short"}}, False),
    ("UsageRequest", {"person": "ada@example.test", "model": "gpt-4o", "input_tokens": 10,
                      "output_tokens": 0}, True),
    ("UsageRequest", {"person": "ada@example.test", "model": "gpt-4o", "input_tokens": 0,
                      "output_tokens": 0}, False),
    ("UsageRequest", {"person": " ", "model": "gpt-4o", "input_tokens": 1,
                      "output_tokens": 1}, False),
    ("UsageRequest", {"person": "a@b", "model": "", "input_tokens": 1, "output_tokens": 1},
     False),
    ("UsageRequest", {"person": "a@b", "model": "m", "input_tokens": -1, "output_tokens": 1},
     False),
    ("UsageRequest", {"person": "a@b", "model": "m", "input_tokens": 10**12 + 1,
                      "output_tokens": 1}, False),
    ("UsageRequest", {"person": "a@b", "model": "m", "input_tokens": "1",
                      "output_tokens": 1}, False),
    ("UsageRequest", {"person": "a@b", "model": "m", "input_tokens": 1}, False),
])
def test_request_schemas_are_as_strict_as_the_handlers(client: FlaskClient, schema: str,
                                                       body: object, valid: bool) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    assert _validator(doc, schema).is_valid(body) is valid  # type: ignore[attr-defined]


def test_body_schemas_of_the_other_routes_are_strict(client: FlaskClient) -> None:
    import jsonschema_rs

    doc = client.get("/api/v1/openapi.json").get_json()

    def body_schema(path: str) -> object:
        schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        return jsonschema_rs.Draft202012Validator({**schema["schema"],
                                                   "components": doc["components"]})

    honour = body_schema("/api/v1/orgs/{slug}/honour")
    assert honour.is_valid({"presentations": ["a.b.c~d.e.f"]})  # type: ignore[attr-defined]
    for bad in ({"presentations": []}, {"presentations": [""]}, {"presentations": "x"},
                {"presentations": ["x"], "extra": 1}, {}, {"presentations": ["x"] * 51}):
        assert not honour.is_valid(bad), bad  # type: ignore[attr-defined]
    redeem = body_schema("/api/v1/orgs/{slug}/redeem")
    assert not redeem.is_valid({"request": ""})  # type: ignore[attr-defined]
    reissue = body_schema("/api/v1/orgs/{slug}/notes/reissue")
    assert not reissue.is_valid({"presentation": "x", "more": 1})  # type: ignore[attr-defined]
