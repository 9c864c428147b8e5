"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every API route."""

from __future__ import annotations

from typing import Any

from flask import current_app

from wallet.web.api import bp

SLUG = {"name": "slug", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,39}$"},
        "description": "Organisation slug; the issuer id is <base>/orgs/<slug>."}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": True,
               "schema": {"type": "string", "pattern": "^[!-~]{1,200}$"},
               "description": "1-200 visible ASCII characters (a UUID will do). Same key"
                              " and body: the stored response (Idempotent-Replayed: true)."
                              " Same key, other body: 422 idempotency_conflict. Still"
                              " running: 409 idempotency_in_flight."}
HOLD_ID = {"name": "hold_id", "in": "path", "required": True,
           "schema": {"type": "string", "minLength": 1, "maxLength": 200},
           "description": "A hold's id, hld_…; any other is not found."}
TOKENS = {"type": "integer", "minimum": 0, "maximum": 10**9}  # wallet.core.holds.MAX_TOKENS
PERSON = [{"bearerToken": []}, {"session": []}]
# Anonymous, or as an engineer (token or session): a nonce asked for so is bound to them,
# and verify then accepts it; a token that is sent is checked (401/403).
OPTIONAL_PERSON = [{}, *PERSON]

# What `wallet.core.money.parse_amount` accepts: a plain decimal, 1e-6 to 1e12 units.
AMOUNT = ("^(?:[1-9][0-9]{0,11}(?:\\.[0-9]{1,6})?|1000000000000(?:\\.0{1,6})?"
          "|0\\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}"
          "|0000[1-9][0-9]?|00000[1-9]))$")
SHOWN_AMOUNT = "^-?(?:0|[1-9][0-9]*)\\.[0-9]{2,6}$"  # `format_amount`: 2-6 fraction digits
B64URL = "^[A-Za-z0-9_-]+$"
# Every JSON body is refused past this size (Flask's MAX_CONTENT_LENGTH) or this nesting.
BODY_LIMITS = (" Bodies over 4 MiB answer 413; JSON nested deeper than 64 levels, or holding"
               " a NUL, answers 400 malformed.")


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


_RESPONSES = {401: "Unauthorized", 429: "TooManyRequests"}


def _problem(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": "#/components/responses/" + _RESPONSES.get(s, "Problem")}
            for s in statuses}


# draft-ietf-httpapi-ratelimit-headers-11 §3 and §4: a List of one Item, named by a String.
_RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        "description": 'The quota per window: "<bucket>-anonymous";q=120;w=60'
                       ' (docs/operations.md, "Rate limits")',
        "schema": {"type": "string", "pattern": '^"[a-z0-9_-]+";q=[0-9]+;w=[0-9]+$'}},
    "RateLimit": {
        "description": 'What is left, and when the window ends: "<policy>";r=0;t=37',
        "schema": {"type": "string", "pattern": '^"[a-z0-9_-]+";r=[0-9]+;t=[0-9]+$'}},
}


def _body(schema: dict[str, Any] | str, *, jwt: bool = False) -> dict[str, Any]:
    content = _json(schema) if isinstance(schema, str) else {
        "application/json": {"schema": schema}}
    if jwt:
        content["application/jwt"] = {"schema": {"type": "string", "minLength": 1}}
    return {"required": True, "content": content}


def _strict(required: list[str], **properties: Any) -> dict[str, Any]:
    """An object with exactly these members (the handler refuses any other)."""
    return {"type": "object", "required": required, "additionalProperties": False,
            "properties": properties}


def spec() -> dict[str, Any]:
    """Build the document (the server URL comes from WALLET_BASE_URL)."""
    ref = {"Money": {"$ref": "#/components/schemas/Money"}}
    money = _strict(["value", "currency"],
                    value={"type": "string", "pattern": SHOWN_AMOUNT},
                    currency={"type": "string", "pattern": "^[A-Z]{3}$"})
    # Compact JWS and SD-JWT characters; tokens over 16 KiB are 413 (wallet.core.jose).
    token = {"type": "string", "pattern": "^[A-Za-z0-9_.~-]{1,16384}$"}
    presentations = {"type": "array", "minItems": 1, "maxItems": 50,
                     "items": {**token, "description": "<JWT>~<KB-JWT>"}}
    problem_codes = ("a stable code: malformed, too_large, amount_invalid, not_found,"
                     " conflict, unauthorized, forbidden, insufficient_funds, … (the list"
                     " is in docs/protocol.md); a peer's refusal is passed on with its code")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Portable compute credits", "version": "1",
                 "description": "Credit notes (SD-JWT VC) that move AI compute budgets between"
                                " employers. Errors are RFC 9457 problem+json with a stable"
                                " `code`; see docs/protocol.md." + BODY_LIMITS},
        "servers": [{"url": current_app.config["WALLET_BASE_URL"]}],
        "paths": {
            "/api/v1/orgs/{slug}/me": {"get": {
                "summary": "The caller's balances at this organisation",
                "parameters": [SLUG], "security": PERSON,
                "responses": {"200": {"description": "Balances", "content": _json("Me")},
                              **_problem(400, 401, 403, 404, 503)}}},
            "/api/v1/orgs/{slug}/me/notes": {
                "get": {"summary": "The caller's notes", "parameters": [SLUG],
                        "security": PERSON,
                        "responses": {"200": {"description": "Notes",
                                              "content": _json("NoteList")},
                                      **_problem(400, 401, 403, 404, 503)}},
                "post": {"summary": "Export part of the caller's wallet as a note bound to a"
                                    " holder key",
                         "parameters": [SLUG, IDEMPOTENCY], "security": PERSON,
                         "requestBody": _body("ExportRequest"),
                         "responses": {"201": {"description": "The note",
                                               "content": _json("NoteRecord")},
                                       **_problem(400, 401, 403, 404, 409, 413, 422, 503)}}},
            "/api/v1/orgs/{slug}/verify": {"post": {
                "summary": "Verify a note or presentations as this organisation would (no"
                           " side effects, no login, rate limited)",
                "description": "Any JSON body gets a report (200): a body that is not"
                               ' {"note": …} or {"presentations": […]} gets one whose'
                               " error is malformed. A body that is not JSON is 400.",
                "parameters": [SLUG], "security": OPTIONAL_PERSON,
                "requestBody": _body("VerifyRequest"),
                "responses": {"200": {"description": "The report of every check that ran",
                                      "content": _json("Report")},
                              **_problem(400, 401, 403, 404, 413, 429, 503)}}},
            "/api/v1/orgs/{slug}/notes/reissue": {"post": {
                "summary": "Reissue an expired note to the same holder key: the holder proves"
                           " the key with a presentation made for this issuer (aud = its"
                           " issuer id, nonce from its nonce endpoint); no login",
                "parameters": [SLUG],
                "requestBody": _body(_strict(["presentation"], presentation=token)),
                "responses": {"201": {"description": "The new note; `replaces` names the old",
                                      "content": _json("ReissuedNote")},
                              **_problem(400, 404, 409, 413, 422, 429, 503)}}},
            "/api/v1/orgs/{slug}/nonces": {"post": {
                "summary": "A fresh single-use nonce for presentations to this organisation"
                           " (expires after 10 minutes; rate limited)",
                "description": "Asked for with a personal token or a signed-in session (with"
                               " X-CSRF-Token), the nonce is bound to that engineer"
                               " (bound: true): honour spends only a nonce bound to the"
                               " person it credits. Anonymous nonces serve verify.",
                "parameters": [SLUG], "security": OPTIONAL_PERSON,
                "responses": {"201": {"description": "The nonce", "content": _json("Nonce")},
                              **_problem(400, 401, 403, 404, 429, 503)}}},
            "/api/v1/orgs/{slug}/honour": {"post": {
                "summary": "Honour presentations for the signed-in engineer: verify, redeem"
                           " at each issuer, credit",
                "parameters": [SLUG, IDEMPOTENCY], "security": PERSON,
                "requestBody": _body(_strict(["presentations"],
                                             presentations=presentations)),
                "responses": {"200": {"description": "At least one note honoured; per-note"
                                                     " results", "content": _json("Honoured")},
                              "202": {"description": "A verified note's issuer could not be"
                                                     " reached: it waits as a pending honour,"
                                                     " retried until the issuer answers",
                                      "content": _json("HonourPending")},
                              **_problem(400, 401, 403, 404, 409, 413, 422, 503)}}},
            "/api/v1/orgs/{slug}/honours/{public_id}": {"get": {
                "summary": "How one of the caller's pending honours stands",
                "parameters": [SLUG, {"name": "public_id", "in": "path", "required": True,
                                      "schema": {"type": "string", "maxLength": 200}}],
                "security": PERSON,
                "responses": {"200": {"description": "pending, honoured, refused (with the"
                                                     " reason) or expired",
                                      "content": _json("PendingHonour")},
                              **_problem(401, 403, 404, 429)}}},
            "/api/v1/orgs/{slug}/redeem": {"post": {
                "summary": "Issuer side: another organisation redeems notes presented to it,"
                           " authenticated by a request JWS signed with its own org key",
                "parameters": [SLUG],
                "requestBody": _body(_strict(["request"], request={
                    **token, "description": "JWS typ cc-redeem+jwt: iss, aud, jti, iat,"
                                            " presentation (list)"}), jwt=True),
                "responses": {"200": {"description": "Per-note receipts (JWS) or errors",
                                      "content": _json("RedeemResults")},
                              **_problem(400, 404, 413, 422, 429, 503)}}},
            "/api/v1/orgs/{slug}/settlements": {"post": {
                "summary": "Payee side: another organisation pays what it owes us for its"
                           " notes we honoured, with a statement JWS signed by its own org"
                           " key; answered with our signed acknowledgement, posted once per"
                           " statement jti",
                "parameters": [SLUG],
                "requestBody": _body(_strict(["statement"], statement={
                    **token, "description": "JWS typ cc-settlement+jwt: iss, aud, jti, iat,"
                                            " amount, direction, through or receipts,"
                                            " reference"}), jwt=True),
                "responses": {"200": {"description": "The acknowledgement (JWS typ"
                                                     " cc-settlement-ack+jwt)",
                                      "content": {"application/json": {"schema": _strict(
                                          ["acknowledgement"], acknowledgement=token)}}},
                              **_problem(400, 404, 413, 422, 429, 503)}}},
            "/api/v1/orgs/{slug}/settlements/{counterparty}": {"get": {
                "summary": "For a counterparty organisation: our signed view of the pair"
                           " (receipts both ways, payments and their acknowledgements), to"
                           " reconcile; the request is a JWS signed with its own org key",
                "parameters": [SLUG,
                               {"name": "counterparty", "in": "path", "required": True,
                                "description": "The requester's issuer id, URL-encoded",
                                "schema": {"type": "string", "minLength": 1,
                                           "maxLength": 300}},
                               {"name": "request", "in": "query", "required": True,
                                "description": "JWS typ cc-settlement-query+jwt: iss, aud,"
                                               " jti, iat (at most 5 minutes old)",
                                "schema": token}],
                "responses": {"200": {"description": "The view (JWS typ"
                                                     " cc-settlement-view+jwt)",
                                      "content": {"application/json": {"schema": _strict(
                                          ["view"], view=token)}}},
                              **_problem(400, 404, 413, 422, 429, 503)}}},
            "/api/v1/orgs/{slug}/usage": {"post": {
                "summary": "A compute gateway records usage; the cost is debited from the"
                           " person's wallet (service token)",
                "parameters": [SLUG, IDEMPOTENCY], "security": [{"bearerToken": []}],
                "requestBody": _body("UsageRequest"),
                "responses": {"201": {"description": "Cost and new balance",
                                      "content": _json("UsageRecord")},
                              **_problem(400, 401, 403, 404, 409, 413, 422, 503)}}},
            "/api/v1/orgs/{slug}/holds": {"post": {
                "summary": "A compute gateway reserves the worst case of one model call for"
                           " an engineer before making it (service token); docs/gateway.md",
                "parameters": [SLUG, IDEMPOTENCY], "security": [{"bearerToken": []}],
                "requestBody": _body("HoldRequest"),
                "responses": {"201": {"description": "The hold, open",
                                      "content": _json("Hold")},
                              **_problem(400, 401, 403, 404, 409, 413, 422, 503)}}},
            "/api/v1/orgs/{slug}/holds/{hold_id}": {"get": {
                "summary": "A hold as it stands (an open hold past its expiry is expired)",
                "parameters": [SLUG, HOLD_ID], "security": [{"bearerToken": []}],
                "responses": {"200": {"description": "The hold", "content": _json("Hold")},
                              **_problem(400, 401, 403, 404, 503)}}},
            "/api/v1/orgs/{slug}/holds/{hold_id}/capture": {"post": {
                "summary": "Settle a hold with what the call used: the cost (from the price"
                           " snapshot of the hold) debited, the rest released; at most once",
                "parameters": [SLUG, HOLD_ID, IDEMPOTENCY], "security": [{"bearerToken": []}],
                "requestBody": _body("CaptureRequest"),
                "responses": {"200": {"description": "The hold, captured",
                                      "content": _json("Hold")},
                              **_problem(400, 401, 403, 404, 409, 413, 422, 503)}}},
            "/api/v1/orgs/{slug}/holds/{hold_id}/void": {"post": {
                "summary": "Release a whole hold (the call failed or was not made)",
                "parameters": [SLUG, HOLD_ID, IDEMPOTENCY], "security": [{"bearerToken": []}],
                "requestBody": _body(_strict([])),
                "responses": {"200": {"description": "The hold, voided",
                                      "content": _json("Hold")},
                              **_problem(400, 401, 403, 404, 409, 413, 422, 503)}}},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {"schema": {
                                          "type": "object", "required": ["openapi", "paths"]}}}}}}},
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
            "responses": {
                "Problem": {"description": "RFC 9457 problem details",
                            "content": {"application/problem+json": {"schema": {
                                "$ref": "#/components/schemas/Problem"}}}},
                "Unauthorized": {
                    "description": "No or invalid credentials (RFC 6750 challenge)",
                    "headers": {"WWW-Authenticate": {
                        "required": True, "description": 'Bearer realm="<base URL>"',
                        "schema": {"type": "string", "pattern": "^Bearer realm=\""}}},
                    "content": {"application/problem+json": {"schema": {
                        "$ref": "#/components/schemas/Problem"}}}},
                "TooManyRequests": {
                    "description": "Over the rate limit (rate_limited): come back after"
                                   " Retry-After seconds",
                    "headers": {"Retry-After": {
                        "required": True, "description": "Seconds until the window ends",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                        **_RATE_LIMIT_HEADERS},
                    "content": {"application/problem+json": {"schema": {
                        "$ref": "#/components/schemas/Problem"}}}},
            },
            "schemas": {
                "Money": money,
                "Problem": {"type": "object", "required": ["type", "title", "status", "code"],
                            "properties": {
                                "type": {"type": "string", "format": "uri"},
                                "title": {"type": "string", "minLength": 1},
                                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                                "detail": {"type": "string"},
                                "code": {"type": "string", "pattern": "^[a-z][a-z_]*$",
                                         "description": problem_codes}}},
                "Me": {"type": "object", "required": ["email", "balance"], "properties": {
                    "email": {"type": "string"},
                    "balance": {"type": "object",
                                "required": ["currency", "available", "unvested", "spent",
                                             "outstanding_notes"],
                                "properties": {
                                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                    "holds_open": {"type": "integer", "minimum": 0,
                                                   "description": "calls in progress"},
                                    **{k: {"type": "string", "pattern": SHOWN_AMOUNT} for k in
                                       ("available", "unvested", "spent", "outstanding_notes",
                                        "held")}}}}},
                "HoldRequest": {
                    **_strict(["person"],
                              person={"type": "string", "maxLength": 254, "pattern": "\\S",
                                      "description": "The engineer's email address"},
                              model={"type": "string",
                                     "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$",
                                     "description": "A model with a price at this"
                                                    " organisation"},
                              max_input_tokens=TOKENS, max_output_tokens=TOKENS,
                              amount={"type": "string", "pattern": AMOUNT},
                              ttl_seconds={"type": "integer", "minimum": 1, "maximum": 3600,
                                           "description": "default 600"},
                              reference={"type": "string", "pattern": "^[ -~]{0,200}$",
                                         "description": "the gateway's own id of the call"}),
                    "oneOf": [
                        {"required": ["model", "max_input_tokens", "max_output_tokens"],
                         "not": {"required": ["amount"]},
                         "anyOf": [{"properties": {"max_input_tokens": {"minimum": 1}}},
                                   {"properties": {"max_output_tokens": {"minimum": 1}}}]},
                        {"required": ["amount"],
                         "properties": {"max_input_tokens": False,
                                        "max_output_tokens": False}}],
                    "description": "The worst case of a call (model and both token counts,"
                                   " not both 0), or an amount (optionally with the model)."},
                "CaptureRequest": {
                    **_strict([], input_tokens=TOKENS, output_tokens=TOKENS,
                              cached_input_tokens=TOKENS,
                              amount={"type": "string", "pattern": AMOUNT}),
                    "oneOf": [{"required": ["input_tokens", "output_tokens"],
                               "not": {"required": ["amount"]}},
                              {"required": ["amount"],
                               "maxProperties": 1}],
                    "description": "What the call used (cached_input_tokens are part of"
                                   " input_tokens, so at most as many; a hold placed for an"
                                   " amount without a model is captured with an amount)."},
                "Hold": {"type": "object",
                         "required": ["id", "person", "model", "amount", "currency", "state",
                                      "expires_at", "reference", "available"],
                         "properties": {
                             "id": {"type": "string", "pattern": "^hld_[A-Za-z0-9_-]{16,40}$"},
                             "person": {"type": "string"},
                             "model": {"type": ["string", "null"]},
                             "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                             "state": {"enum": ["open", "captured", "voided", "expired"]},
                             "expires_at": {"type": "string", "format": "date-time"},
                             "reference": {"type": "string"},
                             **{k: {"type": "string", "pattern": SHOWN_AMOUNT} for k in
                                ("amount", "available", "cost", "released", "overrun")},
                             "usage": {"type": "object", "properties": {
                                 k: {"type": ["integer", "null"]} for k in
                                 ("input_tokens", "output_tokens", "cached_input_tokens")}},
                             "price": {"type": ["object", "null"]}}},
                "ExportRequest": _strict(
                    ["amount", "holder_jwk"],
                    amount={"type": "string", "pattern": AMOUNT,
                            "description": "A positive decimal string, at most six fraction"
                                           " digits and 10^12 units, e.g. \"1250.00\""},
                    currency={"type": "string", "pattern": "^[A-Z]{3}$",
                              "description": "The organisation's currency (the default)"},
                    holder_jwk={"$ref": "#/components/schemas/Jwk"}),
                "Jwk": {"type": "object", "required": ["kty", "crv", "x"],
                        "description": "A public Ed25519 JWK (RFC 8037): x is 32 bytes, a"
                                       " point of large order; kid, if sent, is its RFC 7638"
                                       " thumbprint. A private part (d) is refused.",
                        "not": {"required": ["d"]},
                        "properties": {"kty": {"const": "OKP"}, "crv": {"const": "Ed25519"},
                                       "x": {"type": "string",
                                             "pattern": "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"},
                                       "kid": {"type": "string",
                                               "pattern": "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"},
                                       "alg": {"enum": ["EdDSA", "Ed25519"]}}},
                "NoteRecord": {"type": "object",
                               "required": ["jti", "note", "state", "amount", "issued_at",
                                            "expires_at", "holder_jkt", "status"],
                               "properties": {
                    "jti": {"type": "string", "minLength": 1},
                    "note": {"type": "string", "description": "<issuer-signed JWT>~"},
                    "state": {"enum": ["active", "redeemed", "revoked", "reclaimed", "expired"]},
                    "amount": ref["Money"],
                    "issued_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "holder_jkt": {"type": "string", "pattern": B64URL},
                    "status": {"type": "object", "required": ["status_list"]}}},
                "ReissuedNote": {"allOf": [{"$ref": "#/components/schemas/NoteRecord"},
                                           {"type": "object", "required": ["replaces"],
                                            "properties": {"replaces": {"type": "string"}}}]},
                "NoteList": {"type": "object", "required": ["notes"], "properties": {"notes": {
                    "type": "array", "items": {"$ref": "#/components/schemas/NoteRecord"}}}},
                "VerifyRequest": {
                    "description": "Any JSON value; these two shapes are verified, anything"
                                   " else gets a report whose error is malformed.",
                    "anyOf": [_strict(["note"], note=token),
                              _strict(["presentations"], presentations=presentations),
                              {}]},
                "Report": {"type": "object", "required": ["valid", "errors", "checks", "note"],
                           "properties": {
                               "valid": {"type": "boolean"},
                               "errors": {"type": "array", "items": {
                                   "type": "object", "required": ["code", "message"],
                                   "properties": {"code": {"type": "string"},
                                                  "message": {"type": "string"},
                                                  "index": {"type": "integer"}}}},
                               "checks": {"type": "array", "items": {
                                   "type": "object", "required": ["name", "ok"],
                                   "properties": {"name": {"type": "string"},
                                                  "ok": {"type": "boolean"}}}},
                               "note": {"type": ["object", "null"]},
                               "results": {"type": "array",
                                           "items": {"$ref": "#/components/schemas/Report"}}}},
                "Nonce": {"type": "object", "required": ["nonce", "audience", "expires_at"],
                          "properties": {"nonce": {"type": "string", "minLength": 1},
                                         "audience": {"type": "string", "format": "uri"},
                                         "expires_at": {"type": "integer"},
                                         "bound": {"type": "boolean"}}},
                "Honoured": {"type": "object", "required": ["honoured", "results", "balance"],
                             "properties": {
                    "honoured": {"type": "integer", "minimum": 1},
                    "results": {"type": "array", "items": {
                        "type": "object", "required": ["index", "honoured"], "properties": {
                            "index": {"type": "integer"},
                            "jti": {"type": ["string", "null"]},
                            "issuer": {"type": ["string", "null"]},
                            "amount": {"oneOf": [ref["Money"], {"type": "null"}]},
                            "honoured": {"type": "boolean"}, "receipt": {"type": "string"},
                            "error": {"type": "object"}}}},
                    "balance": {"type": "object", "required": ["currency"]}}},
                "HonourPending": {"type": "object",
                                  "required": ["state", "status_url", "results", "balance"],
                                  "properties": {
                    "state": {"const": "pending"},
                    "status_url": {"type": "string", "format": "uri"},
                    "honoured": {"type": "integer", "minimum": 0},
                    "results": {"type": "array", "items": {"type": "object"}},
                    "balance": {"type": "object", "required": ["currency"]}}},
                "PendingHonour": {"type": "object",
                                  "required": ["id", "state", "status_url", "amount"],
                                  "properties": {
                    "id": {"type": "string"},
                    "state": {"enum": ["pending", "honoured", "refused", "expired"]},
                    "status_url": {"type": "string", "format": "uri"},
                    "jti": {"type": "string"}, "issuer": {"type": "string"},
                    "amount": ref["Money"], "attempts": {"type": "integer"},
                    "error": {"type": "object"}}},
                "RedeemResults": {"type": "object", "required": ["results"],
                                  "properties": {"results": {
                    "type": "array", "items": {"type": "object", "properties": {
                        "jti": {"type": ["string", "null"]},
                        "receipt": {"type": "string",
                                    "description": "JWS typ cc-receipt+jwt"},
                        "replayed": {"type": "boolean"},
                        "error": {"type": "object"}}}}}},
                "UsageRequest": {**_strict(
                    ["person", "model", "input_tokens", "output_tokens"],
                    person={"type": "string", "maxLength": 254, "pattern": "\\S",
                            "description": "The engineer's email address"},
                    model={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$",
                           "description": "A model with a price at this organisation"},
                    input_tokens={"type": "integer", "minimum": 0, "maximum": 10**12},
                    output_tokens={"type": "integer", "minimum": 0, "maximum": 10**12}),
                    "anyOf": [{"properties": {"input_tokens": {"minimum": 1}}},
                              {"properties": {"output_tokens": {"minimum": 1}}}],
                    "description": "Not both token counts 0."},
                "UsageRecord": {"type": "object",
                                "required": ["id", "person", "model", "input_tokens",
                                             "output_tokens", "cost", "available"],
                                "properties": {
                                    "id": {"type": "integer"}, "person": {"type": "string"},
                                    "model": {"type": "string"},
                                    "input_tokens": {"type": "integer"},
                                    "output_tokens": {"type": "integer"},
                                    "cost": ref["Money"], "available": ref["Money"],
                                    "price": {"type": "object"},
                                    "transfer": {"type": ["integer", "null"]},
                                    "recorded_at": {"type": "string", "format": "date-time"}}},
            },
        },
    }


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return spec()
