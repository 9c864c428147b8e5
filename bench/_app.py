"""The wallet app plus one baseline route, for bench/http_verify.py only (never the product).

    gunicorn -c deploy/gunicorn.conf.py --pythonpath bench '_app:create()'

`POST /api/v1/bench/echo` parses the JSON body and answers a small JSON object. It sits
under /api/ on purpose and is registered on the real app (`wallet.create_app()`), so it
goes through everything an API request goes through before and after its view: the input
screen (which parses the JSON), the session interface (no cookie: no store), the person
hook, CSRF exemption as for the API, ProxyFix, the response headers, the access log. What
it does not do is what verify does: the rate-limit count, the organisation, the note's
checks and the JSON report. The ratio verify / echo is therefore the cost of verify
itself.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, request

import wallet
from wallet.core.errors import Malformed
from wallet.web import csrf

bp = Blueprint("bench", __name__, url_prefix="/api/v1/bench")


@bp.post("/echo")
def echo() -> dict[str, Any]:
    """Parse the JSON body; answer what it held, in a few members."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Malformed("send a JSON object")
    return {"ok": True, "members": sorted(body), "length": request.content_length}


def create() -> Flask:
    """`wallet.create_app()` from the environment, with the echo route."""
    app = wallet.create_app()
    app.register_blueprint(bp)
    csrf.exempt(bp)
    return app
