"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every API route."""

from __future__ import annotations

from typing import Any

from flask import current_app

from wallet.core.errors import ERROR_CODES
from wallet.web.api import bp

SLUG = {"name": "slug", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,39}$"},
        "description": "Organisation slug; the issuer id is <base>/orgs/<slug>."}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": 200},
               "description": "Same key and body: the stored response (Idempotent-Replayed:"
                              " true). Same key, other body: 422 idempotency_conflict. Still"
                              " running: 409 idempotency_in_flight."}
PERSON = [{"bearerToken": []}, {"session": []}]


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _problem(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": "#/components/responses/Problem"} for s in statuses}


def spec() -> dict[str, Any]:
    """Build the document (the server URL comes from WALLET_BASE_URL)."""
    money = {"type": "object", "required": ["value", "currency"], "additionalProperties": False,
             "properties": {"value": {"type": "string",
                                      "pattern": r"^(0|[1-9][0-9]{0,12})(\.[0-9]{1,6})?$"},
                            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Portable compute credits", "version": "1",
                 "description": "Credit notes (SD-JWT VC) that move AI compute budgets between"
                                " employers. Errors are RFC 9457 problem+json with a stable"
                                " `code`; see docs/protocol.md."},
        "servers": [{"url": current_app.config["WALLET_BASE_URL"]}],
        "paths": {
            "/api/v1/orgs/{slug}/me": {"get": {
                "summary": "The caller's balances at this organisation",
                "parameters": [SLUG], "security": PERSON,
                "responses": {"200": {"description": "Balances", "content": _json("Me")},
                              **_problem(401, 403, 404)}}},
            "/api/v1/orgs/{slug}/me/notes": {
                "get": {"summary": "The caller's notes", "parameters": [SLUG],
                        "security": PERSON,
                        "responses": {"200": {"description": "Notes",
                                              "content": _json("NoteList")},
                                      **_problem(401, 403, 404)}},
                "post": {"summary": "Export part of the caller's wallet as a note bound to a"
                                    " holder key",
                         "parameters": [SLUG, IDEMPOTENCY], "security": PERSON,
                         "requestBody": {"required": True, "content": _json("ExportRequest")},
                         "responses": {"201": {"description": "The note",
                                               "content": _json("NoteRecord")},
                                       **_problem(400, 401, 403, 404, 409, 422, 503)}}},
            "/api/v1/orgs/{slug}/verify": {"post": {
                "summary": "Verify a note or presentations as this organisation would (no"
                           " side effects, no login, rate limited)",
                "parameters": [SLUG],
                "requestBody": {"required": True, "content": _json("VerifyRequest")},
                "responses": {"200": {"description": "The report of every check that ran",
                                      "content": _json("Report")},
                              **_problem(400, 404, 429)}}},
            "/api/v1/orgs/{slug}/notes/reissue": {"post": {
                "summary": "Reissue an expired note to the same holder key: the holder proves"
                           " the key with a presentation made for this issuer (aud = its"
                           " issuer id, nonce from its nonce endpoint); no login",
                "parameters": [SLUG],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["presentation"],
                    "properties": {"presentation": {"type": "string"}}}}}},
                "responses": {"201": {"description": "The new note; `replaces` names the old",
                                      "content": _json("NoteRecord")},
                              **_problem(400, 404, 409, 422, 429, 503)}}},
            "/api/v1/orgs/{slug}/nonces": {"post": {
                "summary": "A fresh single-use nonce for presentations to this organisation"
                           " (expires after 10 minutes; no login, rate limited)",
                "parameters": [SLUG],
                "responses": {"201": {"description": "The nonce", "content": _json("Nonce")},
                              **_problem(404, 429)}}},
            "/api/v1/orgs/{slug}/honour": {"post": {
                "summary": "Honour presentations for the signed-in engineer: verify, redeem"
                           " at each issuer, credit",
                "parameters": [SLUG, IDEMPOTENCY], "security": PERSON,
                "requestBody": {"required": True, "content": _json("Presentations")},
                "responses": {"200": {"description": "At least one note honoured; per-note"
                                                     " results", "content": _json("Honoured")},
                              **_problem(400, 401, 403, 404, 409, 422, 503)}}},
            "/api/v1/orgs/{slug}/redeem": {"post": {
                "summary": "Issuer side: another organisation redeems notes presented to it,"
                           " authenticated by a request JWS signed with its own org key",
                "parameters": [SLUG],
                "requestBody": {"required": True, "content": {
                    **_json("RedeemRequest"),
                    "application/jwt": {"schema": {"type": "string"}}}},
                "responses": {"200": {"description": "Per-note receipts (JWS) or errors",
                                      "content": _json("RedeemResults")},
                              **_problem(400, 404, 413, 422, 429, 503)}}},
            "/api/v1/orgs/{slug}/usage": {"post": {
                "summary": "A compute gateway records usage; the cost is debited from the"
                           " person's wallet (service token)",
                "parameters": [SLUG, IDEMPOTENCY], "security": [{"bearerToken": []}],
                "requestBody": {"required": True, "content": _json("UsageRequest")},
                "responses": {"201": {"description": "Cost and new balance",
                                      "content": {"application/json": {"schema": {
                                          "type": "object"}}}},
                              **_problem(400, 401, 403, 404, 409, 422)}}},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {}}}}}},
        },
        "components": {
            "securitySchemes": {
                "bearerToken": {"type": "http", "scheme": "bearer",
                                "description": "A personal or service token from"
                                               " `wallet token create` or the portal."},
                "session": {"type": "apiKey", "in": "cookie", "name": "wallet_session",
                            "description": "The portal's session; state-changing calls"
                                           " must also send X-CSRF-Token."},
            },
            "responses": {"Problem": {"description": "RFC 9457 problem details",
                                      "content": {"application/problem+json": {"schema": {
                                          "$ref": "#/components/schemas/Problem"}}}}},
            "schemas": {
                "Money": money,
                "Problem": {"type": "object", "required": ["type", "title", "status", "code"],
                            "properties": {"type": {"type": "string"},
                                           "title": {"type": "string"},
                                           "status": {"type": "integer"},
                                           "detail": {"type": "string"},
                                           "code": {"type": "string",
                                                    "enum": sorted({*ERROR_CODES,
                                                                    "csrf_failed",
                                                                    "internal_error",
                                                                    "method_not_allowed",
                                                                    "unsupported_media_type",
                                                                    "http_error"})}}},
                "Me": {"type": "object", "properties": {
                    "email": {"type": "string"},
                    "balance": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "ExportRequest": {"type": "object", "required": ["amount", "holder_jwk"],
                                  "additionalProperties": False,
                                  "properties": {"amount": {"type": "string"},
                                                 "currency": {"type": "string"},
                                                 "holder_jwk": {
                                                     "$ref": "#/components/schemas/Jwk"}}},
                "Jwk": {"type": "object", "required": ["kty", "crv", "x"],
                        "properties": {"kty": {"const": "OKP"}, "crv": {"const": "Ed25519"},
                                       "x": {"type": "string"}, "kid": {"type": "string"},
                                       "alg": {"enum": ["EdDSA", "Ed25519"]}}},
                "NoteRecord": {"type": "object", "properties": {
                    "jti": {"type": "string"}, "note": {"type": "string",
                                                        "description": "<issuer-signed JWT>~"},
                    "state": {"enum": ["active", "redeemed", "revoked", "reclaimed", "expired"]},
                    "amount": {"$ref": "#/components/schemas/Money"},
                    "issued_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "holder_jkt": {"type": "string"}, "status": {"type": "object"}}},
                "NoteList": {"type": "object", "properties": {"notes": {
                    "type": "array", "items": {"$ref": "#/components/schemas/NoteRecord"}}}},
                "VerifyRequest": {"oneOf": [
                    {"type": "object", "required": ["note"],
                     "properties": {"note": {"type": "string"}}},
                    {"$ref": "#/components/schemas/Presentations"}]},
                "Presentations": {"type": "object", "required": ["presentations"],
                                  "properties": {"presentations": {
                                      "type": "array", "minItems": 1, "maxItems": 50,
                                      "items": {"type": "string",
                                                "description": "<JWT>~<KB-JWT>"}}}},
                "Report": {"type": "object", "required": ["valid", "errors", "checks", "note"],
                           "properties": {
                               "valid": {"type": "boolean"},
                               "errors": {"type": "array", "items": {"type": "object",
                                          "properties": {"code": {"type": "string"},
                                                         "message": {"type": "string"},
                                                         "index": {"type": "integer"}}}},
                               "checks": {"type": "array", "items": {"type": "object",
                                          "properties": {"name": {"type": "string"},
                                                         "ok": {"type": "boolean"}}}},
                               "note": {"type": ["object", "null"]},
                               "results": {"type": "array",
                                           "items": {"$ref": "#/components/schemas/Report"}}}},
                "Nonce": {"type": "object", "properties": {
                    "nonce": {"type": "string"}, "audience": {"type": "string"},
                    "expires_at": {"type": "integer"}}},
                "Honoured": {"type": "object", "properties": {
                    "honoured": {"type": "integer"},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "index": {"type": "integer"}, "jti": {"type": ["string", "null"]},
                        "issuer": {"type": ["string", "null"]},
                        "amount": {"oneOf": [{"$ref": "#/components/schemas/Money"},
                                             {"type": "null"}]},
                        "honoured": {"type": "boolean"}, "receipt": {"type": "string"},
                        "error": {"type": "object"}}}},
                    "balance": {"type": "object"}}},
                "RedeemRequest": {"type": "object", "required": ["request"],
                                  "properties": {"request": {
                                      "type": "string",
                                      "description": "JWS typ cc-redeem+jwt: iss, aud, jti,"
                                                     " iat, presentation (list)"}}},
                "RedeemResults": {"type": "object", "properties": {"results": {
                    "type": "array", "items": {"type": "object", "properties": {
                        "jti": {"type": ["string", "null"]},
                        "receipt": {"type": "string",
                                    "description": "JWS typ cc-receipt+jwt"},
                        "replayed": {"type": "boolean"},
                        "error": {"type": "object"}}}}}},
                "UsageRequest": {"type": "object",
                                 "required": ["person", "model", "input_tokens", "output_tokens"],
                                 "properties": {"person": {"type": "string", "format": "email"},
                                                "model": {"type": "string"},
                                                "input_tokens": {"type": "integer", "minimum": 0},
                                                "output_tokens": {"type": "integer",
                                                                  "minimum": 0}}},
            },
        },
    }


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return spec()
