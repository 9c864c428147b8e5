"""The wallet as the budget authority of a LiteLLM proxy: hold before each call, capture
the exact usage after it, void a call that failed (docs/gateway.md).

    # config.yaml of the LiteLLM proxy
    litellm_settings:
      callbacks: wallet.integrations.litellm.handler

Install with `pip install 'compute-credit-wallet[litellm]'` (LiteLLM's proxy extra, at
the version this adapter is tested with). Settings come from the proxy's environment:

    WALLET_URL            the wallet's base URL, e.g. https://wallet.example.com (required)
    WALLET_ORG            the organisation's slug (required)
    WALLET_SERVICE_TOKEN  a service token: `wallet token create --org SLUG --service` (required)
    WALLET_PERSON_FIELD   where the engineer's email comes from (default `user_id`):
                            user_id              the LiteLLM key's user_id
                            user_email           the LiteLLM key's user_email
                            key_metadata.NAME    a field of the key's metadata
                            metadata.NAME        a field of the request's metadata (sent by
                                                 the client: trust your clients to use it)
                            user                 the OpenAI `user` request parameter (idem)
    WALLET_FAIL_OPEN      `true`: when the wallet cannot be reached, let calls through without
                          a hold and log a WARNING line for each (default false: refuse them)
    WALLET_TIMEOUT        seconds, the total deadline of one wallet request (default 3)
    WALLET_HOLD_TTL       seconds a hold stays open if no capture comes (default 600, <= 3600)
    WALLET_MODEL_MAP      optional `gateway-name=catalogue-name,...` when the proxy's model
                          names differ from the wallet's price catalogue
    WALLET_CA_FILE        optional CA bundle for an https WALLET_URL with a private CA

What each hook does:

- `async_pre_call_hook` (before the model): counts the prompt with LiteLLM's own
  `token_counter`, takes the worst-case output from the request's `max_tokens`
  (`max_completion_tokens`, `max_output_tokens`) times `n`, else from the model's output
  cap (`model_info.max_output_tokens` of the deployments, else `litellm.get_model_info`),
  and places a hold for that worst case. Refused (`insufficient_funds`) -> the client gets
  `litellm.budget_exceeded_status_code` (422 unless the operator changed it), type
  `budget_exceeded`, code `insufficient_funds`, and the model is never called. Wallet
  unreachable or failing (transport error, timeout, 5xx) -> 503 `wallet_unavailable`,
  unless WALLET_FAIL_OPEN.
- `async_log_success_event` (after the model, streams included: LiteLLM fires it once per
  stream with the assembled response, whose usage is the provider's final usage chunk or
  LiteLLM's own count of the streamed text): captures `prompt_tokens`, `completion_tokens`
  and `prompt_tokens_details.cached_tokens`. The class is named `_PROXY_WalletBudget`
  because LiteLLM skips logging callbacks for a request that asks `"no-log": true` except
  classes named so (its own spend tracking): without that, any client could skip the
  capture and be charged nothing.
- `async_post_call_failure_hook` (the proxy gave up on the request, after its retries and
  fallbacks): voids the hold. Per-attempt failure events are not used, since a router retry
  may still succeed on the same hold.

Each hold's Idempotency-Key is made from the LiteLLM call id and a random part drawn once
per request and kept in the request's metadata with the hold id: a retry of the hold
request (or of the hook on the same request) reuses it, while a client that sends the same
`x-litellm-call-id` twice cannot replay an earlier hold. Captures and voids use keys made
from the hold id. The success and failure hooks act only on holds this process placed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    import aiohttp
    import litellm
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.proxy._types import ProxyException
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "wallet.integrations.litellm needs LiteLLM with its proxy: "
        "pip install 'compute-credit-wallet[litellm]'") from exc

__all__ = ["Settings", "WalletBudget", "handler"]

log = logging.getLogger("wallet.integrations.litellm")

# Where the adapter keeps its state in the request's metadata (LiteLLM passes it on to
# the success event as litellm_params["metadata"] or ["litellm_metadata"]).
HOLD_ID = "wallet_hold_id"
HOLD_KEY = "wallet_hold_key"
FAIL_OPEN_MARK = "wallet_fail_open"

# Call types priced by tokens: a hold is placed for each.
PRICED = frozenset({
    "completion", "acompletion", "text_completion", "atext_completion",
    "anthropic_messages", "aanthropic_messages", "responses", "aresponses",
    "embedding", "aembedding",
})
# Call types that reach no model (files, listings, MCP tool listings...): let through.
_FREE_WORDS = ("file", "list", "retrieve", "delete", "get_", "cancel", "mcp", "moderation")
MAX_TTL = 3600
_CALL_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")  # the call id may come from the client
_COUNT_IN_THREAD = 20_000  # characters of prompt above which token counting leaves the loop


class SettingsError(ValueError):
    """A WALLET_* variable is missing or malformed."""


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.strip() == "":
        return False
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false (got {value!r})")


def _number(value: str | None, name: str, default: float, low: float, high: float) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        got = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number (got {value!r})") from None
    if not low <= got <= high:
        raise SettingsError(f"{name} must be from {low:g} to {high:g} (got {value!r})")
    return got


@dataclass(frozen=True)
class Settings:
    """The adapter's settings (see the module's docstring for the variables)."""

    url: str
    org: str
    token: str = field(repr=False)
    person_field: str = "user_id"
    fail_open: bool = False
    timeout: float = 3.0
    hold_ttl: int = 600
    model_map: Mapping[str, str] = field(default_factory=dict)
    ca_file: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        missing = [n for n in ("WALLET_URL", "WALLET_ORG", "WALLET_SERVICE_TOKEN")
                   if not env.get(n, "").strip()]
        if missing:
            raise SettingsError(f"{', '.join(missing)} not set: the wallet budget callback"
                                " needs WALLET_URL, WALLET_ORG and WALLET_SERVICE_TOKEN")
        url = env["WALLET_URL"].strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"WALLET_URL must start with http:// or https:// (got {url!r})")
        person_field = env.get("WALLET_PERSON_FIELD", "").strip() or "user_id"
        _check_person_field(person_field)
        mapping: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in env.get("WALLET_MODEL_MAP", "").split(","))):
            name, sep, target = pair.partition("=")
            if not sep or not name.strip() or not target.strip():
                raise SettingsError(f"WALLET_MODEL_MAP entries are name=catalogue-name"
                                    f" (got {pair!r})")
            mapping[name.strip()] = target.strip()
        return cls(
            url=url, org=env["WALLET_ORG"].strip(), token=env["WALLET_SERVICE_TOKEN"].strip(),
            person_field=person_field,
            fail_open=_flag(env.get("WALLET_FAIL_OPEN"), "WALLET_FAIL_OPEN"),
            timeout=_number(env.get("WALLET_TIMEOUT"), "WALLET_TIMEOUT", 3.0, 0.05, 120),
            hold_ttl=int(_number(env.get("WALLET_HOLD_TTL"), "WALLET_HOLD_TTL", 600, 1,
                                 MAX_TTL)),
            model_map=mapping, ca_file=env.get("WALLET_CA_FILE") or None)


def _check_person_field(spec: str) -> None:
    if spec in ("user_id", "user_email", "user"):
        return
    prefix, _, name = spec.partition(".")
    if prefix in ("metadata", "key_metadata") and name:
        return
    raise SettingsError("WALLET_PERSON_FIELD must be user_id, user_email, user,"
                        f" metadata.NAME or key_metadata.NAME (got {spec!r})")


# -- errors the client sees ------------------------------------------------------------------


def refusal(status: int, kind: str, code: str, message: str) -> ProxyException:
    """An OpenAI-shaped error the proxy returns as is: {"error": {message, type, code}}."""
    return ProxyException(message=message, type=kind, param=None, code=status,
                          openai_code=code)


class WalletUnavailable(Exception):
    """No usable answer from the wallet: transport error, timeout or a 5xx."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.body.get("code") or "")

    @property
    def detail(self) -> str:
        return str(self.body.get("detail") or self.body.get("title") or self.code
                   or f"HTTP {self.status}")


# -- the worst case of one call --------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    input_tokens: int
    output_tokens: int


class Unpriceable(Exception):
    """The call cannot be priced before it is made (the client gets a 400)."""


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _limits(model_group: str) -> tuple[str, int | None]:
    """The model LiteLLM knows the group by (for counting) and its configured output cap."""
    router = getattr(_proxy_server(), "llm_router", None)
    if router is not None:
        info = getattr(router, "get_model_listing_info", None)
        found = info(model_group) if info is not None else None
        if found is not None and found.cost_map_keys:
            return found.cost_map_keys[0], found.max_output_tokens
        deployments = router.get_model_list(model_name=model_group) or []
        for deployment in deployments:
            params = deployment.get("litellm_params") or {}
            model_info = deployment.get("model_info") or {}
            cap = _positive_int(model_info.get("max_output_tokens"))
            if params.get("model"):
                return str(params.get("base_model") or params["model"]), cap
    return model_group, None


_PROXY_SERVER: list[Any] = []


def _proxy_server() -> Any:
    """LiteLLM's proxy_server module (its router), or None outside the proxy; tried once."""
    if not _PROXY_SERVER:
        try:
            from litellm.proxy import proxy_server
        except Exception:  # outside the proxy (tests, scripts): no router
            proxy_server = None  # type: ignore[assignment]
        _PROXY_SERVER.append(proxy_server)
    return _PROXY_SERVER[0]


def _model_output_cap(model: str) -> int | None:
    try:
        info = litellm.get_model_info(model)
    except Exception:  # LiteLLM raises for a model it has not mapped
        return None
    return _positive_int(info.get("max_output_tokens")) or _positive_int(info.get("max_tokens"))


def _text_of(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def count_input(model: str, data: Mapping[str, Any], call_type: str) -> int:
    """Prompt tokens of the request, by LiteLLM's `token_counter` for `model`."""
    count = litellm.token_counter
    if call_type in ("embedding", "aembedding", "text_completion", "atext_completion"):
        value = data.get("input") if "embedding" in call_type else data.get("prompt")
        texts = value if isinstance(value, list) else [value]
        return sum(count(model=model, text=_text_of(t)) for t in texts if t is not None)
    if call_type in ("responses", "aresponses"):
        value = data.get("input")
        total = 0
        if isinstance(data.get("instructions"), str):
            total += count(model=model, text=data["instructions"])
        if isinstance(value, str):
            return total + count(model=model, text=value)
        try:
            return total + count(model=model, messages=value or [],
                                 use_default_image_token_count=True)
        except Exception:  # items that are not chat messages: count the text
            return total + count(model=model, text=_text_of(value))
    messages = list(data.get("messages") or [])
    system = data.get("system")  # Anthropic's /v1/messages keeps it outside the messages
    if system:
        messages.insert(0, {"role": "system", "content": _text_of(system)
                            if not isinstance(system, str) else system})
    return count(model=model, messages=messages, tools=data.get("tools"),
                 tool_choice=data.get("tool_choice"), use_default_image_token_count=True)


def estimate(data: Mapping[str, Any], call_type: str) -> Estimate:
    """The most this call may use: its prompt, and its output cap times `n`."""
    group = str(data.get("model") or "")
    model, configured_cap = _limits(group)
    input_tokens = count_input(model, data, call_type)
    if "embedding" in call_type:
        return Estimate(input_tokens, 0)
    asked = None
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if data.get(name) is not None:
            asked = _positive_int(data.get(name))
            if asked is None:
                raise Unpriceable(f"{name} must be a positive whole number")
            break
    cap = asked or configured_cap or _model_output_cap(model)
    if cap is None:
        raise Unpriceable(
            f"the wallet holds the worst case of each call, and the output limit of {group!r}"
            " is unknown: send max_tokens, or set model_info.max_output_tokens for it in the"
            " proxy's config")
    choices = _positive_int(data.get("n")) or 1
    return Estimate(input_tokens, cap * choices)


# -- usage after the call ----------------------------------------------------------------------


def _field(obj: object, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(response: object, kwargs: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(input tokens, output tokens, cached input tokens) as LiteLLM reports the call.

    Cached tokens are part of the input, as the wallet counts them. Anthropic-shaped usage
    (input_tokens without the cache reads) is brought to that form.
    """
    usage = _field(response, "usage")
    if usage is None:
        slo = kwargs.get("standard_logging_object") or {}
        if slo.get("prompt_tokens") is None and slo.get("completion_tokens") is None:
            return None
        return _count(slo.get("prompt_tokens")), _count(slo.get("completion_tokens")), 0
    prompt = _field(usage, "prompt_tokens")
    output = _field(usage, "completion_tokens")
    cached = _count(_field(_field(usage, "prompt_tokens_details"), "cached_tokens"))
    if prompt is None:  # Responses API or Anthropic shape
        prompt = _count(_field(usage, "input_tokens"))
        output = _field(usage, "output_tokens")
        cached = cached or _count(_field(_field(usage, "input_tokens_details"),
                                         "cached_tokens"))
        reads = _count(_field(usage, "cache_read_input_tokens"))
        if reads:
            prompt += reads + _count(_field(usage, "cache_creation_input_tokens"))
            cached = reads
    prompt = _count(prompt)
    return prompt, _count(output), min(cached, prompt)


# -- the callback ------------------------------------------------------------------------------


@dataclass
class _Open:
    call_id: str
    person: str
    model: str
    estimate: Estimate
    forget_at: float  # monotonic: the hold has expired at the wallet by then


def _metadata_of(data: Mapping[str, Any]) -> dict[str, Any] | None:
    for name in ("litellm_metadata", "metadata"):
        value = data.get(name)
        if isinstance(value, dict) and (HOLD_ID in value or FAIL_OPEN_MARK in value):
            return value
    return None


def _hold_metadata(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    params = kwargs.get("litellm_params") or {}
    for source in (params, kwargs):
        found = _metadata_of(source)
        if found is not None:
            return found
    return None


class _PROXY_WalletBudget(CustomLogger):  # LiteLLM runs "_PROXY_" classes on no-log calls too
    """Holds before each model call, captures after, voids on failure (module docstring)."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._open: dict[str, _Open] = {}
        self._unanswered: set[str] = set()
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = {}
        self._prefix = ""  # the API's path at the wallet, with the organisation
        self.capture_attempts = 4

    # -- settings and HTTP ------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def _client(self) -> aiohttp.ClientSession:
        """One pooled session per event loop (a client session must stay on its loop).

        aiohttp, which LiteLLM itself depends on: its C parser makes a request about a
        quarter of the CPU httpx takes (docs/benchmarks.md), and every model call through
        the proxy sends two. Its connections set TCP_NODELAY (Nagle's algorithm would
        hold a request's body for the wallet's delayed ACK).
        """
        loop = asyncio.get_running_loop()
        held = self._clients.get(id(loop))
        if held is not None and held[0] is loop:
            return held[1]
        s = self.settings
        self._prefix = f"{s.url}/api/v1/orgs/{s.org}"
        connector = aiohttp.TCPConnector(limit=200, ssl=_tls_context(s.ca_file),
                                         keepalive_timeout=30)
        client = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),  # each request's own deadline rules
            headers={"Authorization": f"Bearer {s.token}", "User-Agent": "wallet-litellm",
                     "Content-Type": "application/json"})
        self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
        self._clients[id(loop)] = (loop, client)
        return client

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (the proxy never needs to)."""
        held = self._clients.pop(id(asyncio.get_running_loop()), None)
        if held is not None:
            await held[1].close()

    async def _post(self, path: str, body: Mapping[str, Any], key: str, *,
                    attempts: int = 2, deadline: float | None = None) -> Answer:
        """POST with an Idempotency-Key; transport errors and 5xx are retried with the same
        key within the total deadline, then raise `WalletUnavailable`."""
        s = self.settings
        client = self._client()
        url = self._prefix + path
        data = json.dumps(body).encode()
        headers = {"Idempotency-Key": key}
        total = s.timeout if deadline is None else deadline
        end = time.monotonic() + total
        last: str = "no attempt"
        for attempt in range(attempts):
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    async with client.post(url, data=data, headers=headers) as r:
                        status, raw = r.status, await r.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                answer = Answer(status, _json_object(raw))
                if status < 500:
                    return answer
                last = f"HTTP {status} {answer.detail}"
            if attempt + 1 < attempts:
                await asyncio.sleep(min(0.05 * 2 ** attempt, max(0.0, end - time.monotonic())))
        raise WalletUnavailable(last)

    # -- before the model -------------------------------------------------------------------

    def person_of(self, user_api_key_dict: Any, data: Mapping[str, Any]) -> str | None:
        spec = self.settings.person_field
        value: object
        if spec in ("user_id", "user_email"):
            value = getattr(user_api_key_dict, spec, None)
        elif spec == "user":
            value = data.get("user")
        else:
            where, _, name = spec.partition(".")
            source = (getattr(user_api_key_dict, "metadata", None) if where == "key_metadata"
                      else data.get("metadata") or data.get("litellm_metadata"))
            value = source.get(name) if isinstance(source, Mapping) else None
        return value.strip() if isinstance(value, str) and value.strip() else None

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict,
                                  call_type: Any) -> dict:
        kind = str(getattr(call_type, "value", call_type))
        ours = _metadata_of(data) or {}
        if kind in PRICED and ours.get(HOLD_ID) in self._open:
            return data  # the hook ran before for this very request: its hold stands
        # A key this process drew for this request and got no answer for is reused; the
        # client's own metadata never names a hold or a key.
        retry_key = ours.get(HOLD_KEY) if ours.get(HOLD_KEY) in self._unanswered else None
        for name in ("metadata", "litellm_metadata"):
            if isinstance(data.get(name), dict):
                for mark in (HOLD_ID, HOLD_KEY, FAIL_OPEN_MARK):
                    data[name].pop(mark, None)
        if kind not in PRICED:
            if any(word in kind for word in _FREE_WORDS):
                return data
            raise refusal(403, "invalid_request_error", "unpriced_call",
                          f"this gateway's wallet budget prices token calls only; {kind} calls"
                          " are refused")
        try:
            settings = self.settings
        except SettingsError as exc:
            log.error("wallet budget: %s; refusing the call", exc)
            raise refusal(503, "wallet_unavailable", "wallet_unavailable",
                          "the gateway's wallet budget is not configured; the call was not"
                          " made") from None
        person = self.person_of(user_api_key_dict, data)
        if person is None:
            raise refusal(403, "permission_denied", "no_person",
                          f"this key names no engineer ({settings.person_field} is empty), so"
                          " no wallet can pay for the call")
        group = str(data.get("model") or "")
        model = settings.model_map.get(group, group)
        try:
            size = len(json.dumps(data.get("messages") or data.get("input")
                                  or data.get("prompt") or "", default=str))
            if size > _COUNT_IN_THREAD:
                worst = await asyncio.to_thread(estimate, data, kind)
            else:
                worst = estimate(data, kind)
        except Unpriceable as exc:
            raise refusal(400, "invalid_request_error", "unpriceable", str(exc)) from None
        call_id = _CALL_ID_SAFE.sub("", str(data.get("litellm_call_id") or ""))[:100]
        key = retry_key or f"litellm:{call_id or 'call'}:{secrets.token_hex(8)}"
        body: dict[str, Any] = {
            "person": person, "model": model, "max_input_tokens": worst.input_tokens,
            "max_output_tokens": worst.output_tokens, "ttl_seconds": settings.hold_ttl,
            "reference": f"litellm {call_id}" if call_id else "litellm",
        }
        target = self._target_metadata(data, kind)
        target[HOLD_KEY] = key
        self._unanswered.add(key)
        try:
            answer = await self._post("/holds", body, key)
        except WalletUnavailable as exc:
            if len(self._unanswered) > 4096:
                self._unanswered.clear()
            if settings.fail_open:
                target[FAIL_OPEN_MARK] = True
                log.warning("WALLET FAIL-OPEN: call %s by %s on %s let through WITHOUT A HOLD"
                            " (wallet unreachable: %s); worst case %d input + %d output tokens",
                            call_id, person, model, exc, worst.input_tokens,
                            worst.output_tokens)
                return data
            log.error("wallet budget: wallet unreachable (%s); refused call %s by %s on %s",
                      exc, call_id, person, model)
            raise refusal(503, "wallet_unavailable", "wallet_unavailable",
                          "the wallet that holds this gateway's budget could not be reached;"
                          " the call was not made") from None
        self._unanswered.discard(key)
        if answer.status == 201 and isinstance(answer.body.get("id"), str):
            hold_id = answer.body["id"]
            target[HOLD_ID] = hold_id
            self._remember(hold_id, _Open(call_id, person, model, worst,
                                          time.monotonic() + settings.hold_ttl + 60))
            return data
        raise self._refused(answer, person, model)

    def _refused(self, answer: Answer, person: str, model: str) -> ProxyException:
        if answer.code == "insufficient_funds":
            return refusal(int(getattr(litellm, "budget_exceeded_status_code", 422)),
                           "budget_exceeded", "insufficient_funds",
                           f"insufficient credit: {answer.detail}")
        if answer.status in (401, 403) and answer.code in ("unauthorized", "forbidden", "") \
                and "left" not in answer.detail:
            log.error("wallet budget: the wallet refused the gateway's service token (%s %s)",
                      answer.status, answer.detail)
            return refusal(503, "wallet_unavailable", "wallet_unavailable",
                           "the gateway is not allowed to place holds at its wallet; the call"
                           " was not made")
        if answer.status in (403, 404):
            return refusal(403, "permission_denied", answer.code or "not_found",
                           f"no wallet for {person} at this organisation: {answer.detail}")
        return refusal(400, "invalid_request_error", answer.code or "wallet_refused",
                       f"the wallet refused to hold credit for this call on {model}:"
                       f" {answer.detail}")

    @staticmethod
    def _target_metadata(data: dict, kind: str) -> dict[str, Any]:
        for name in ("litellm_metadata", "metadata"):
            if isinstance(data.get(name), dict):
                return data[name]  # type: ignore[no-any-return]
        name = "metadata" if kind in ("completion", "acompletion") else "litellm_metadata"
        data[name] = {}
        return data[name]  # type: ignore[no-any-return]

    def _remember(self, hold_id: str, entry: _Open) -> None:
        if len(self._open) >= 1024 and len(self._open) % 256 == 0:
            now = time.monotonic()
            self._open = {k: v for k, v in self._open.items() if v.forget_at > now}
        self._open[hold_id] = entry

    def open_holds(self) -> int:
        """Holds placed by this process and neither captured nor voided yet."""
        return len(self._open)

    # -- after the model --------------------------------------------------------------------

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        metadata = _hold_metadata(kwargs) or {}
        hold_id = metadata.get(HOLD_ID)
        entry = self._open.pop(hold_id, None) if isinstance(hold_id, str) else None
        used = usage_of(response_obj, kwargs)
        if entry is None:
            if metadata.get(FAIL_OPEN_MARK):
                log.warning("WALLET FAIL-OPEN: call %s used %s tokens (input, output, cached)"
                            " and was not charged", kwargs.get("litellm_call_id"), used)
            return
        if used is None:
            log.warning("wallet budget: no usage reported for call %s; capturing the worst"
                        " case held", entry.call_id)
            used = (entry.estimate.input_tokens, entry.estimate.output_tokens, 0)
        body = {"input_tokens": used[0], "output_tokens": used[1],
                "cached_input_tokens": used[2]}
        await self._settle(hold_id, "capture", body, entry)

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Any,
                                           user_api_key_dict: Any,
                                           traceback_str: str | None = None) -> None:
        metadata = _metadata_of(request_data) or {}
        hold_id = metadata.get(HOLD_ID)
        entry = self._open.pop(hold_id, None) if isinstance(hold_id, str) else None
        if entry is not None:
            await self._settle(hold_id, "void", {}, entry)
        return None

    async def _settle(self, hold_id: str, action: str, body: Mapping[str, Any],
                      entry: _Open) -> None:
        """Capture or void, retried (same key) on transport errors; never raises."""
        try:
            answer = await self._post(f"/holds/{hold_id}/{action}", body,
                                      f"litellm:{action}:{hold_id}",
                                      attempts=self.capture_attempts,
                                      deadline=max(10.0, self.settings.timeout * 4))
        except WalletUnavailable as exc:
            log.error("wallet budget: could not %s hold %s of call %s (%s): %s; it is released"
                      " when it expires", action, hold_id, entry.call_id, exc, dict(body))
            return
        except Exception:  # a logging callback must not take the proxy down
            log.exception("wallet budget: %s of hold %s failed", action, hold_id)
            return
        if answer.status != 200:
            log.error("wallet budget: %s of hold %s (call %s) refused: %s %s %s", action,
                      hold_id, entry.call_id, answer.status, answer.code, answer.detail)


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verified TLS for an https wallet: WALLET_CA_FILE, else certifi's bundle (as httpx
    and LiteLLM verify), else the system's."""
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    try:
        import certifi
    except ImportError:  # pragma: no cover - LiteLLM's dependencies bring it
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"detail": raw[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"detail": str(value)[:200]}


WalletBudget = _PROXY_WalletBudget

# The instance the proxy's config.yaml names: `callbacks: wallet.integrations.litellm.handler`.
handler = WalletBudget()
