"""A tiny wallet speaking the holds contract (docs/gateway.md) on a loopback port.

Enough of the real thing for the adapter's tests: balances in micros per person, the
price catalogue of wallet/data/prices.json, holds that are placed, captured and voided at
most once, answers replayed per Idempotency-Key, problem+json refusals with a `code`.
Faults for the tests: `down` (close the connection unanswered), `lose_answer` (do the
work, then drop the answer: the adapter must retry with the same key), `delay`.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PRICES = Path(__file__).resolve().parents[2] / "wallet" / "data" / "prices.json"
TOKEN = "svc-test-token"
MICROS = 1_000_000


def catalogue() -> dict[str, tuple[int, int, int]]:
    """model -> (input, output, cached input) price per million tokens, in micros."""
    models = json.loads(PRICES.read_text())["models"]
    out = {}
    for name, p in models.items():
        cached = p.get("cached_input") or p["input"]
        out[name] = tuple(int(Decimal(v) * MICROS) for v in (p["input"], p["output"], cached))
    return out  # type: ignore[return-value]


def cost(price: tuple[int, int, int], input_tokens: int, output_tokens: int,
         cached: int = 0) -> int:
    """Micros for the tokens at `price`, rounded up to the next micro once (as the wallet)."""
    numerator = (input_tokens - cached) * price[0] + cached * price[2] + output_tokens * price[1]
    return -(-numerator // MICROS)


def fmt(micros: int) -> str:
    return f"{Decimal(micros) / MICROS:.6f}"


@dataclass
class Hold:
    id: str
    person: str
    model: str
    amount: int
    state: str = "open"
    cost: int | None = None
    usage: dict[str, int] | None = None
    reference: str = ""


@dataclass
class FakeWallet:
    slug: str = "acme"
    balances: dict[str, int] = field(default_factory=dict)
    prices: dict[str, tuple[int, int, int]] = field(default_factory=catalogue)
    holds: dict[str, Hold] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    down: bool = False
    lose_answer: int = 0  # answers to drop after doing the work
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _answers: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)

    # -- the contract ------------------------------------------------------------------------

    def held(self, person: str) -> int:
        return sum(h.amount for h in self.holds.values() if h.person == person
                   and h.state == "open")

    def available(self, person: str) -> int:
        return self.balances.get(person, 0) - self.held(person)

    def handle(self, method: str, path: str, headers: Any,
               body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, _problem(401, "unauthorized", "a service token is required")
        m = re.fullmatch(rf"/api/v1/orgs/{self.slug}/holds(?:/([^/]+)(?:/(capture|void))?)?",
                         path)
        if m is None:
            return 404, _problem(404, "not_found", f"no route {path}")
        hold_id, action = m.group(1), m.group(2)
        if method == "GET" and hold_id and not action:
            hold = self.holds.get(hold_id)
            return (200, self.view(hold)) if hold else (404, _problem(404, "not_found", "no"))
        key = headers.get("Idempotency-Key")
        if not key:
            return 400, _problem(400, "malformed", "send an Idempotency-Key header")
        scope = f"{path}"
        if (scope, key) in self._answers:
            return self._answers[(scope, key)]
        if hold_id is None:
            answer = self.place(body)
        elif action == "capture":
            answer = self.capture(hold_id, body)
        else:
            answer = self.void(hold_id)
        self._answers[(scope, key)] = answer
        return answer

    def place(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        person, model = body.get("person"), body.get("model")
        if person not in self.balances:
            return 404, _problem(404, "not_found", f"no engineer {person} at {self.slug}")
        if model not in self.prices:
            return 404, _problem(404, "not_found", f"no price for {model}")
        ins, outs = body.get("max_input_tokens"), body.get("max_output_tokens")
        if not all(isinstance(v, int) and v >= 0 for v in (ins, outs)):
            return 422, _problem(422, "malformed", "token counts must be whole numbers")
        ttl = body.get("ttl_seconds", 600)
        if not isinstance(ttl, int) or not 1 <= ttl <= 3600:
            return 422, _problem(422, "malformed", "ttl_seconds must be 1..3600")
        amount = cost(self.prices[model], ins, outs)  # type: ignore[arg-type]
        if amount > self.available(person):  # type: ignore[arg-type]
            return 422, _problem(422, "insufficient_funds",
                                 f"{person} has {fmt(self.available(person))} available; this"
                                 f" call may cost up to {fmt(amount)}. Nothing was held.")
        hold = Hold("hld_" + secrets.token_urlsafe(18), person, model, amount,  # type: ignore[arg-type]
                    reference=str(body.get("reference") or ""))
        self.holds[hold.id] = hold
        return 201, self.view(hold)

    def capture(self, hold_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        hold = self.holds.get(hold_id)
        if hold is None:
            return 404, _problem(404, "not_found", "no such hold")
        if hold.state != "open":
            return 409, _problem(409, "conflict", f"the hold is {hold.state}")
        ins, outs = body.get("input_tokens"), body.get("output_tokens")
        cached = body.get("cached_input_tokens", 0)
        if not all(isinstance(v, int) and v >= 0 for v in (ins, outs, cached)) or cached > ins:  # type: ignore[operator]
            return 422, _problem(422, "malformed", "bad token counts")
        spent = cost(self.prices[hold.model], ins, outs, cached)  # type: ignore[arg-type]
        hold.state, hold.cost = "captured", spent
        hold.usage = {"input_tokens": ins, "output_tokens": outs, "cached_input_tokens": cached}  # type: ignore[dict-item]
        charged = min(spent, self.balances[hold.person])
        self.balances[hold.person] -= charged
        view = self.view(hold)
        view.update(released=fmt(max(hold.amount - spent, 0)),
                    overrun=fmt(spent - charged))
        return 200, view

    def void(self, hold_id: str) -> tuple[int, dict[str, Any]]:
        hold = self.holds.get(hold_id)
        if hold is None:
            return 404, _problem(404, "not_found", "no such hold")
        if hold.state != "open":
            return 409, _problem(409, "conflict", f"the hold is {hold.state}")
        hold.state = "voided"
        view = self.view(hold)
        view["released"] = fmt(hold.amount)
        return 200, view

    def view(self, hold: Hold) -> dict[str, Any]:
        out: dict[str, Any] = {"id": hold.id, "person": hold.person, "model": hold.model,
                               "amount": fmt(hold.amount), "currency": "USD",
                               "state": hold.state, "expires_at": "2099-01-01T00:00:00Z",
                               "available": fmt(self.available(hold.person))}
        if hold.cost is not None:
            out["cost"] = fmt(hold.cost)
            out["usage"] = hold.usage
        return out


def _problem(status: int, code: str, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": code, "status": status, "detail": detail,
            "code": code}


class Served:
    """The fake wallet on http://127.0.0.1:<port> until `close()`."""

    def __init__(self, wallet: FakeWallet, port: int = 0) -> None:
        self.wallet = wallet

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                """Quiet."""

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                w = wallet
                if w.delay:
                    time.sleep(w.delay)
                if w.down:
                    self.close_connection = True
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with w.lock:
                    w.requests.append((self.command, self.path, body))
                    status, answer = w.handle(self.command, self.path, self.headers, body)
                    lose = w.lose_answer > 0
                    if lose:
                        w.lose_answer -= 1
                if lose:
                    self.close_connection = True
                    return
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json" if status >= 400
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def main() -> None:
    """`python -m tests.integrations.fake_wallet PORT EMAIL=MICROS...` serves until killed
    (bench/litellm_hook.py --wallet fake: the adapter's cost without the app's)."""
    import sys

    port = int(sys.argv[1])
    balances = {k: int(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
    Served(FakeWallet(balances=balances), port)._thread.join()


if __name__ == "__main__":
    main()
