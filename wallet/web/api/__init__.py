"""The JSON API under /api/v1 (docs/protocol.md). Errors are problem+json (errors.py).

This package holds the blueprint and what its views share; the views are in its modules,
which wallet/web/__init__.py imports (each module's routes register on `bp`).
"""

from __future__ import annotations

from flask import Blueprint

from wallet.core.errors import Forbidden
from wallet.models import Person
from wallet.web import guard

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def person_of(principal: guard.Principal, why: str = "a service token has no wallet") -> Person:
    """The engineer behind an API call, or `Forbidden` for a service token."""
    if principal.person is None:
        raise Forbidden(why)
    return principal.person
