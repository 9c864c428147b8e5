"""No outbound request to a non-public address when private peers are off (production)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.support import World
from wallet import db
from wallet.actions import trust as trust_actions
from wallet.actions._base import Actor
from wallet.core.errors import WalletError


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "WALLET_FEDERATION_ALLOW_PRIVATE": False}


@pytest.mark.parametrize("issuer", [
    "https://127.0.0.1:1/orgs/x", "http://169.254.169.254/orgs/metadata",
    "https://10.0.0.8/orgs/x", "https://[::1]/orgs/x", "https://localhost/orgs/x",
    "https://0.0.0.0/orgs/x", "https://192.168.1.1:8443/orgs/x",
])
def test_trust_add_refuses_private_addresses_without_asking_them(
        app: Flask, world: World, issuer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = __import__("wallet.peers", fromlist=["HttpTransport"]).HttpTransport.request

    def recorder(self: Any, method: str, url: str, **kwargs: Any) -> Any:
        calls.append(url)
        return real(self, method, url, **kwargs)

    monkeypatch.setattr("wallet.peers.http.HttpTransport.request", recorder)
    with app.app_context(), pytest.raises(WalletError) as refused:
        trust_actions.add(db.session(), slug="globex", issuer=issuer, actor=Actor.cli())
    assert refused.value.code == "malformed"
    assert "not a public address" in refused.value.message
    assert calls == []


def test_production_turns_private_peers_and_plain_http_off(tmp_path: Any) -> None:
    from wallet import create_app

    # Production refuses http base URLs and guessable secrets (tests/test_app.py).
    app = create_app({"WALLET_ENV": "production",
                      "WALLET_SECRET_KEY": "mV3q_Zr8TfK0xWb-pL9sYc2HdJ7uNa4EoQiG6wRkXy1BtM5v",
                      "WALLET_KEY_PASSPHRASE": "T7bQ-k2ZpW9xLr_4sNc8YvHm3JdFa6GuE0oRiK1tXwSy",
                      "WALLET_BASE_URL": "https://credits.acme.example",
                      "WALLET_INSTANCE_PATH": str(tmp_path / "i"),
                      "WALLET_DATABASE_URL": f"sqlite:///{tmp_path}/d.db"})
    assert app.config["WALLET_FEDERATION_ALLOW_PRIVATE"] is False
    assert app.config["WALLET_FEDERATION_ALLOW_HTTP"] is False
    app.extensions["wallet.engine"].dispose()
