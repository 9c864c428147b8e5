"""A real LiteLLM proxy process on loopback, for the end-to-end tests and bench/litellm_hook.py.

`Proxy.start(...)` writes a config.yaml (JSON, which YAML reads) with mocked models
(`mock_response`: no network), LiteLLM's `custom_auth` from tests/integrations/proxy_hooks.py
mapping test keys to users, and the callbacks asked for; runs `litellm --config ... --host
127.0.0.1 --port <free>` with PYTHONPATH at this tree (so the proxy loads this tree's
wallet.integrations.litellm), waits for it to answer, and `stop()` ends it. The proxy's
output goes to a log file shown when something fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-master-" + "0123456789abcdef" * 2
WALLET_CALLBACK = "wallet.integrations.litellm.handler"
COUNTER_CALLBACK = "tests.integrations.proxy_hooks.counter"
MOCK_TEXT = "Hello from the mock model: the wallet paid for this."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def models(cached_usage: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The mocked models: names from the wallet's catalogue, known to LiteLLM's model map.

    gpt-4o-mini answers MOCK_TEXT (its usage: LiteLLM's mock figures, or for a stream
    LiteLLM's count of the streamed text); gpt-4o answers a fixed response whose usage has
    cached prompt tokens; gpt-4.1-mini fails with a 500 (litellm.InternalServerError).
    """
    usage = dict(cached_usage or {"prompt_tokens": 1200, "completion_tokens": 34,
                                  "total_tokens": 1234,
                                  "prompt_tokens_details": {"cached_tokens": 1000}})
    fixed = {"id": "chatcmpl-fixed", "object": "chat.completion", "created": 1,
             "model": "gpt-4o", "usage": usage,
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "cached hello"}}]}
    return [
        {"model_name": "gpt-4o-mini", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_key": "sk-mock", "mock_response": MOCK_TEXT}},
        {"model_name": "gpt-4o", "litellm_params": {
            "model": "openai/gpt-4o", "api_key": "sk-mock", "mock_response": fixed}},
        {"model_name": "gpt-4.1-mini", "litellm_params": {
            "model": "openai/gpt-4.1-mini", "api_key": "sk-mock",
            "mock_response": "litellm.InternalServerError"}},
    ]


@dataclass
class Proxy:
    command: str
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    calls_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "proxy.log"
        self.calls_path = self.workdir / "calls.txt"

    @classmethod
    def start(cls, command: str, workdir: Path, *, callbacks: list[str],
              keys: Mapping[str, str], env: Mapping[str, str] | None = None,
              model_list: list[dict[str, Any]] | None = None,
              timeout: float = 120.0) -> Proxy:
        workdir.mkdir(parents=True, exist_ok=True)
        proxy = cls(command, workdir, port=free_port())
        config = {
            "model_list": model_list or models(),
            "litellm_settings": {"callbacks": callbacks, "num_retries": 0,
                                 "telemetry": False},
            "router_settings": {"num_retries": 0},
            "general_settings": {"master_key": MASTER_KEY,
                                 "custom_auth": "tests.integrations.proxy_hooks.user_api_key_auth"},
        }
        config_path = workdir / "config.yaml"
        config_path.write_text(json.dumps(config, indent=1))
        child_env = {k: v for k, v in os.environ.items()
                     if not k.startswith(("WALLET_", "LITELLM_", "VIRTUAL_ENV"))}
        child_env.update({
            "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "WARNING",
            "NO_PROXY": "*", "no_proxy": "*",
            "WALLET_TEST_KEYS": json.dumps(dict(keys)),
            "WALLET_TEST_CALLS": str(proxy.calls_path),
        })
        child_env.update(env or {})
        log = proxy.log_path.open("wb")
        proxy.process = subprocess.Popen(
            [command, "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(proxy.port), "--num_workers", "1"],
            cwd=workdir, env=child_env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            proxy._wait_ready(timeout)
        except BaseException:
            proxy.stop()
            raise
        return proxy

    def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the LiteLLM proxy exited ({self.process.returncode}):\n"
                                   + self.log_tail())
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = self.request("GET", "/health/liveliness", timeout=2)
                if status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the LiteLLM proxy did not answer in {timeout:.0f}s:\n"
                           + self.log_tail())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(15)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def model_calls(self) -> list[str]:
        """Call ids of the calls that reached a model, in order."""
        try:
            return [line.split(" ", 1)[1] for line in self.calls_path.read_text().splitlines()
                    if line.startswith("model ")]
        except FileNotFoundError:
            return []

    # -- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, key: str | None = None,
                timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers=headers)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def chat(self, key: str, **body: Any) -> Reply:
        """One /v1/chat/completions call; a stream is read to its end."""
        status, headers, raw = self.request("POST", "/v1/chat/completions", body, key=key)
        reply = Reply(status, headers.get("x-litellm-call-id", ""), raw)
        if body.get("stream") and status == 200:
            for event in _events(raw):
                if event.get("usage"):
                    reply.usage = event["usage"]
                for choice in event.get("choices") or []:
                    reply.text += (choice.get("delta") or {}).get("content") or ""
        elif status == 200:
            answer = json.loads(raw)
            reply.usage = answer.get("usage")
            reply.text = answer["choices"][0]["message"]["content"]
        else:
            with contextlib.suppress(ValueError):
                reply.error = json.loads(raw).get("error") or {}
        return reply


@dataclass
class Reply:
    status: int
    call_id: str
    raw: bytes
    usage: dict[str, Any] | None = None
    text: str = ""
    error: dict[str, Any] = field(default_factory=dict)


def _events(raw: bytes) -> Iterator[dict[str, Any]]:
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: "):])


class Relay:
    """A TCP relay 127.0.0.1:<port> -> target, so a test can take the wallet down at once:
    `cut()` closes the listener and every connection (pooled keep-alive ones included), and
    from then on connections are refused."""

    def __init__(self, target_port: int) -> None:
        import threading

        self._threading = threading
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._sockets = list(self._sockets), set()
        self._listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._thread.join(5)
