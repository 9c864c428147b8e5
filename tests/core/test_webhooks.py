"""wallet/core/webhooks.py: Standard Webhooks signatures (a known answer and the
independent `standardwebhooks` verifier), secrets, payloads, the retry schedule, sealing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from wallet.core import webhooks as core
from wallet.core.errors import Malformed

# The example of the Standard Webhooks reference libraries' tests.
KNOWN_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KNOWN_ID, KNOWN_TS, KNOWN_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
KNOWN_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
AT = datetime(2026, 12, 7, 23, 30, 5, tzinfo=UTC)


def test_signature_known_answer() -> None:
    assert core.signature(KNOWN_SECRET, KNOWN_ID, KNOWN_TS, KNOWN_BODY) == KNOWN_SIGNATURE


def test_headers_verify_with_the_independent_library() -> None:
    secret = core.new_secret(bytes(range(32)))
    body = core.body("note.redeemed", AT, {"note": "n1", "amount": "12.50"})
    now = int(datetime.now(UTC).timestamp())
    headers = core.headers(secret, core.new_message_id(b"\x01" * 16), now, body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature",
                            "content-type"}
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(core.new_secret(bytes(32))).verify(body, headers)


def test_secret_format() -> None:
    secret = core.new_secret(b"k" * 32)
    assert secret.startswith("whsec_")
    assert core.secret_bytes(secret) == b"k" * 32
    assert base64.b64decode(secret[6:]) == b"k" * 32
    for bad in ("k" * 40, "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(Malformed):
            core.secret_bytes(bad)
    with pytest.raises(ValueError):
        core.new_secret(b"x" * 8)


def test_message_ids_are_unique_and_prefixed() -> None:
    assert core.new_message_id(b"\x00" * 16) == "msg_AAAAAAAAAAAAAAAAAAAAAA"
    assert core.new_message_id(b"\x00" * 16) != core.new_message_id(b"\x01" * 16)
    with pytest.raises(ValueError):
        core.new_message_id(b"short")


def test_payload_shape() -> None:
    body = core.body("tranche.vested", AT, {"tranche_id": 3, "person": "Zoë"})
    assert json.loads(body) == {"type": "tranche.vested", "timestamp": "2026-12-07T23:30:05Z",
                                "data": {"tranche_id": 3, "person": "Zoë"}}
    assert "Zoë".encode() in body  # UTF-8, not escaped
    with pytest.raises(ValueError):
        core.body("x", datetime(2026, 1, 1), {})  # a naive datetime is refused


def test_retry_schedule_follows_the_spec_then_gives_up() -> None:
    waits = []
    attempts = 1
    while (nxt := core.next_attempt(attempts, AT)) is not None:
        waits.append(nxt - AT)
        attempts += 1
    assert waits == [timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30),
                     timedelta(hours=2), timedelta(hours=5), timedelta(hours=10),
                     timedelta(hours=10)]
    assert attempts == core.MAX_ATTEMPTS == 8


@pytest.mark.parametrize(("status", "ok"), [(200, True), (204, True), (299, True),
                                            (301, False), (400, False), (500, False)])
def test_only_2xx_is_delivered(status: int, ok: bool) -> None:
    assert core.delivered(status) is ok


def test_low_balance_once_per_crossing() -> None:
    assert core.crossed_below(15, 5, 10)
    assert core.crossed_below(10, 9, 10)
    assert not core.crossed_below(9, 5, 10)  # below already: no second event
    assert not core.crossed_below(20, 10, 10)  # at the threshold is not below it


@pytest.mark.parametrize("url", ["ftp://x.test/", "javascript:alert(1)", "https://", "",
                                 "https://u:p@x.test/", "http://x.test:99999/",
                                 "https://x.test/#frag", "https://x.test/" + "a" * 500])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(Malformed):
        core.check_url(url)


def test_event_types() -> None:
    assert core.check_types(["balance.low", "note.redeemed"]) == ["note.redeemed",
                                                                  "balance.low"]
    with pytest.raises(Malformed):
        core.check_types([])
    with pytest.raises(Malformed):
        core.check_types(["note.stolen"])


def test_sealing_round_trip_and_binding() -> None:
    key = core.seal_key("a passphrase", rounds=1000)
    sealed = core.seal(key, KNOWN_SECRET, nonce=b"n" * 12, context="whe_1")
    assert KNOWN_SECRET not in sealed
    assert core.unseal(key, sealed, context="whe_1") == KNOWN_SECRET
    with pytest.raises(Malformed):
        core.unseal(key, sealed, context="whe_2")  # another endpoint's row
    with pytest.raises(Malformed):
        core.unseal(core.seal_key("another", rounds=1000), sealed, context="whe_1")
    with pytest.raises(Malformed):
        core.unseal(key, "v9.garbage", context="whe_1")
