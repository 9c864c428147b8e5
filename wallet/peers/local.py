"""An issuer on this instance: requests go through this app's routes in-process."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app
from werkzeug.test import Client

from wallet.peers.base import Fetched

LOCAL_CALL = "wallet.local_call"
"""WSGI environ key set on in-process calls between organisations of this instance (no
HTTP client can set an environ key, so it cannot be forged from outside)."""


class LocalTransport:
    """An issuer on this instance: the request goes through this app's routes in-process."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, url: str, *, body: bytes | None = None,
                content_type: str | None = None) -> Fetched:
        parts = urlsplit(url)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        # A fresh app context: the other organisation's request gets its own `g` and its
        # own database session, exactly as if it had arrived over a socket.
        with app.app_context():
            answer = Client(app).open(
                parts.path + (f"?{parts.query}" if parts.query else ""), method=method,
                data=body, content_type=content_type, base_url=self.base_url,
                environ_base={"REMOTE_ADDR": "127.0.0.1", LOCAL_CALL: True})
            try:
                return Fetched(answer.status_code, answer.get_data(), answer.mimetype)
            finally:
                answer.close()
