"""Page numbers from query strings, bounded so no offset can overflow a database integer."""

from __future__ import annotations

from flask import request

MAX_PAGE = 100_000


def page_number() -> int:
    """The `page` query argument: 1 by default, clamped to 1..100,000."""
    value = request.args.get("page", 1, type=int) or 1
    return min(max(1, value), MAX_PAGE)
